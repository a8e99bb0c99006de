"""The dpo stage on TRL's DPOTrainer with the tiny model: real steps move the held-out pair metrics the right way and
change the weights, the generation eval runs before and after, LoRA merges into a plain model, IPO and FP8 run,
config errors name the field, and (slow) a kill -9 mid-run then a resume."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import kill_run_after
from test_reward_model_stage import write_pairs

from posttrain.cli import main

RECIPE = """
name: dpo_test
model: tiny
stages:
  - name: dpo
    type: dpo
    data: jsonl:{pairs}
    eval_size: 8
    eval_rewards: [{{name: math}}, {{name: repetition}}]
    eval_num_samples: 2
    eval_max_tokens: 8
    max_steps: {steps}
    batch_size: 4
    learning_rate: 1.0e-3
    beta: 0.1
    max_length: 128
    logging_steps: 1
    save_steps: 3
"""


@pytest.fixture
def pairs(tmp_path):
    return write_pairs(tmp_path / "pairs.jsonl", num_prompts=24)


def _run(write_recipe, tmp_path, pairs, steps=4, *overrides) -> dict:
    runs = tmp_path / "runs"
    path = write_recipe(RECIPE.format(pairs=pairs, steps=steps))
    assert main(["run", path, *overrides, "--run-dir", str(runs), "--no-progress"]) == 0
    return json.loads((runs / "dpo_test/dpo/manifest.json").read_text())["metrics"]


def test_dpo_moves_held_out_pairs_and_evaluates_before_and_after(write_recipe, tmp_path, pairs, tiny_path):
    from transformers import AutoModelForCausalLM

    m = _run(write_recipe, tmp_path, pairs)
    assert m["steps"] == 4 and m["eval_pairs"] >= 8 and m["train_pairs"] + m["eval_pairs"] == 24
    assert m["eval_pairs_start/rewards/margins"] == 0.0  # the reference is the starting policy
    assert m["eval_pairs_end/rewards/accuracies"] >= 0.9 and m["eval_pairs_end/rewards/margins"] > 0.1
    assert m["eval_pairs_end/loss"] < m["eval_pairs_start/loss"]
    for when in ("eval_start", "eval_end"):
        assert {f"{when}/reward/math", f"{when}/pass@1", f"{when}/truncated", f"{when}/repetition"} <= set(m)
        assert m[f"{when}/num_prompts"] == m["eval_prompts"] > 0
    stage = tmp_path / "runs/dpo_test/dpo"
    rows = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    trained = AutoModelForCausalLM.from_pretrained(stage / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_path).state_dict()
    assert all(not torch.equal(p, base[n]) for n, p in trained.named_parameters())


def test_dpo_with_lora_and_ipo_merges_into_a_plain_model(write_recipe, tmp_path, pairs, tiny_path):
    from transformers import AutoModelForCausalLM

    m = _run(write_recipe, tmp_path, pairs, 2, "stages.dpo.lora_rank=4", "stages.dpo.loss_type=ipo")
    assert m["steps"] == 2 and m["eval_pairs_end/rewards/margins"] > 0
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "runs/dpo_test/dpo/model")
    assert not any("lora" in n for n, _ in trained.named_parameters())


def test_dpo_with_fp8_records_converted_layers(write_recipe, tmp_path, pairs, tiny_path):
    m = _run(write_recipe, tmp_path, pairs, 1, "stages.dpo.fp8=true")
    assert len(m["fp8_layers"]) == 14 and list(m["fp8_skipped"]) == ["lm_head"] and m["steps"] == 1
    assert m["eval_pairs_start/rewards/margins"] == 0.0  # policy and reference share the FP8 forward


def test_dpo_config_errors(write_recipe, capsys, pairs):
    text = RECIPE.format(pairs=pairs, steps=2)
    assert main(["validate", write_recipe(text.replace("beta: 0.1", "loss_type: ipoo"))]) == 2
    assert "loss_type: 'ipoo' is not allowed (did you mean 'ipo'?)" in capsys.readouterr().err
    assert (
        main(["validate", write_recipe(text.replace("beta: 0.1", "beta: 0.0") + "    trl_args: {beta: 0.2}\n")]) == 2
    )
    err = capsys.readouterr().err
    assert "beta: must be positive, got 0.0" in err
    assert "trl_args.beta: set it as the stage's own field `beta`" in err


@pytest.mark.slow
def test_kill_9_mid_training_then_resume(write_recipe, tmp_path, pairs, tiny_path):
    runs = tmp_path / "runs"
    path = write_recipe(RECIPE.format(pairs=pairs, steps=12))
    first = runs / "dpo_test/dpo/checkpoints/checkpoint-3/trainer_state.json"
    assert kill_run_after(path, runs, first), "no checkpoint was written before the kill"
    assert not (runs / "dpo_test/dpo/manifest.json").exists()
    assert main(["run", path, "--run-dir", str(runs), "--no-progress"]) == 0
    m = json.loads((runs / "dpo_test/dpo/manifest.json").read_text())
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] >= 3 and m["metrics"]["steps"] == 12
    assert m["metrics"]["eval_pairs_start/rewards/margins"] == 0.0  # read back from before the kill
    assert "eval_start/pass@1" in m["metrics"]
    steps = [json.loads(x)["step"] for x in (runs / "dpo_test/dpo/metrics.jsonl").read_text().splitlines()]
    assert sorted({s for s in steps if s > 0}) == list(range(1, 13))
