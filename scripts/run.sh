#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded model: bash scripts/run.sh [overrides...]
# Until the GRPO stage lands this runs the expert-SFT recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RECIPE="${POSTTRAIN_RECIPE:-recipes/sft.yaml}"
exec "${POSTTRAIN_VENV:-.venv}/bin/posttrain" run "$RECIPE" "$@"
