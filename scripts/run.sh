#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded model: bash scripts/run.sh [overrides...]
# The main job is GRPO (recipes/grpo.yaml); POSTTRAIN_RECIPE=recipes/sft.yaml runs another recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RECIPE="${POSTTRAIN_RECIPE:-recipes/grpo.yaml}"
exec "${POSTTRAIN_VENV:-.venv}/bin/posttrain" run "$RECIPE" "$@"
