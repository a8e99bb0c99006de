"""Golden values (torchtune's habit): 2-step SFT and GRPO runs on the tiny model compare their per-step losses and
gradient norms with numbers recorded from a known-good run, so a silent change in training math (masks, schedules,
loss normalisation, reward plumbing, data order) fails here, not in a user's results.

When a change is meant to alter training math, rerun with `POSTTRAIN_GOLDEN_PRINT=1 pytest tests/test_golden.py -s`,
check the new numbers and paste them below with a line on why they moved. The tolerance covers thread-count and
BLAS summation-order noise on CPU (observed spread well under 1e-4 relative), not a change of math.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from posttrain.cli import main

SFT = """
name: golden_sft
model: tiny
stages:
  - name: sft
    type: sft
    data: {source: reasoning_gym:chain_sum, size: 40, seed: 1}
    samples: expert
    eval_size: 4
    max_steps: 2
    batch_size: 4
    learning_rate: 1.0e-3
    max_length: 96
    eval_steps: 0
    logging_steps: 1
    save_steps: 10
"""

GRPO = """
name: golden_grpo
model: tiny
stages:
  - name: rl
    type: grpo
    data: {source: reasoning_gym:chain_sum, size: 24, seed: 1, args: {min_terms: 2, max_terms: 2, max_digits: 1}}
    rewards:
      - {name: math, weight: 1.0}
      - {name: length, weight: 0.5, max_length: 40, cache_length: 30, unit: chars}
    eval_size: 0
    max_steps: 2
    batch_size: 4
    num_generations: 2
    max_completion_length: 8
    generation_kwargs: {min_new_tokens: 8}
    learning_rate: 1.0e-3
    save_steps: 10
"""

# Recorded from the tree before the layering refactor (issue #11), one intra-op thread.
GOLDEN = {
    "sft": {"loss": [10.767405, 10.616263], "grad_norm": [2.156216, 2.397259]},
    # On-policy DAPO loss is 0 by construction (ratio 1, group-centred advantages); the gradient is not. Step 1's
    # groups are all-equal under the length penalty, so its gradient norm is 0 too.
    "grpo": {"loss": [0.0, 0.0], "grad_norm": [0.0, 1.2129], "reward": [-0.5, -0.479167]},
}
RTOL = 1e-3


def _steps(path: Path, keys: list[str]) -> dict[str, list[float]]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    return {k: [round(float(r[k]), 6) for r in rows] for k in keys}


def _check(kind: str, got: dict[str, list[float]]) -> None:
    if os.environ.get("POSTTRAIN_GOLDEN_PRINT"):
        print(f"\n{kind}: {got}")
    for key, want in GOLDEN[kind].items():
        assert got[key] == pytest.approx(want, rel=RTOL, abs=1e-6), f"{kind} {key}: got {got[key]}, recorded {want}"


@pytest.mark.usefixtures("one_thread")
def test_sft_two_steps_match_recorded_losses(write_recipe, tmp_path):
    runs = tmp_path / "runs"
    assert main(["run", write_recipe(SFT), "--run-dir", str(runs), "--no-progress"]) == 0
    _check("sft", _steps(runs / "golden_sft/sft/metrics.jsonl", ["loss", "grad_norm"]))


@pytest.mark.usefixtures("one_thread")
def test_grpo_two_steps_match_recorded_losses(write_recipe, tmp_path):
    runs = tmp_path / "runs"
    assert main(["run", write_recipe(GRPO), "--run-dir", str(runs), "--no-progress"]) == 0
    _check("grpo", _steps(runs / "golden_grpo/rl/metrics.jsonl", ["loss", "grad_norm", "reward"]))
