"""The SFT stage on TRL: real training on the tiny model, a kill -9 mid-run and a resume, and (slow) a few steps
on the real embedded model whose output folder loads and generates."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, kill_run_after

from posttrain.cli import main

RECIPE = """
name: sft_test
model: {model}
stages:
  - name: expert
    type: sft
    data: {{source: reasoning_gym:chain_sum, size: 120, seed: 1}}
    samples: expert
    eval_size: 8
    max_steps: {steps}
    batch_size: 4
    learning_rate: 1.0e-3
    max_length: 128
    eval_steps: 0
    logging_steps: 1
    save_steps: 3
"""


def _manifest(runs: Path) -> dict:
    return json.loads((runs / "sft_test/expert/manifest.json").read_text())


def test_sft_trains_and_writes_a_loadable_model(write_recipe, tmp_path, tiny_path):
    from transformers import AutoModelForCausalLM

    runs = tmp_path / "runs"
    assert (
        main(["run", write_recipe(RECIPE.format(model="tiny", steps=4)), "--run-dir", str(runs), "--no-progress"]) == 0
    )
    m = _manifest(runs)["metrics"]
    assert m["steps"] == 4 and m["train_rows"] == 112 and m["eval_rows"] == 8
    # checkpoints (resume state: weights and optimizer) go once the manifest is written; the stage stays cached
    assert not (runs / "sft_test/expert/checkpoints").exists() and (runs / "sft_test/expert/model").is_dir()
    assert (
        main(["run", write_recipe(RECIPE.format(model="tiny", steps=4)), "--run-dir", str(runs), "--no-progress"]) == 0
    )
    assert _manifest(runs)["metrics"] == m
    assert m["eval_loss_end"] < m["eval_loss_start"]
    rows = [json.loads(x) for x in (runs / "sft_test/expert/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    trained = AutoModelForCausalLM.from_pretrained(runs / "sft_test/expert/model")
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, base.state_dict()[n])]
    assert len(changed) == len(list(base.parameters()))


@pytest.mark.slow
def test_kill_9_mid_training_then_resume(write_recipe, tmp_path, tiny_path):
    runs = tmp_path / "runs"
    path = write_recipe(RECIPE.format(model="tiny", steps=12))
    first = runs / "sft_test/expert/checkpoints/checkpoint-3/trainer_state.json"
    assert kill_run_after(path, runs, first), "no checkpoint was written before the kill"
    assert not (runs / "sft_test/expert/manifest.json").exists()
    assert main(["run", path, "--run-dir", str(runs), "--no-progress"]) == 0
    m = _manifest(runs)
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] >= 3 and m["metrics"]["steps"] == 12
    steps = [json.loads(x)["step"] for x in (runs / "sft_test/expert/metrics.jsonl").read_text().splitlines()]
    loss_steps = [s for s in steps if s > 0]
    assert sorted(set(loss_steps)) == list(range(1, 13))  # every step logged, none twice after the truncation
    # The same 12 steps without the kill: the same data order (per-step losses) and the same weights. The resumed
    # run restores the optimizer, scheduler and RNG state, so only float summation order could differ: 1e-6.
    again = tmp_path / "again"
    assert main(["run", path, "--run-dir", str(again), "--no-progress"]) == 0
    losses = [[r["loss"] for r in map(json.loads, (d / "sft_test/expert/metrics.jsonl").read_text().splitlines())
               if "loss" in r] for d in (runs, again)]  # fmt: skip
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert_same_weights(runs / "sft_test/expert/model", again / "sft_test/expert/model", atol=1e-6)


@pytest.mark.slow
def test_sft_on_embedded_model_output_loads_and_generates(write_recipe, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runs = tmp_path / "runs"
    assert (
        main(["run", write_recipe(RECIPE.format(model="embedded", steps=2)), "--run-dir", str(runs), "--no-progress"])
        == 0
    )
    out = runs / "sft_test/expert/model"
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 30
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    gen = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert tok.decode(gen[0, ids["input_ids"].shape[1] :]).strip() != ""


def _fp8_run(write_recipe, tmp_path, model: str, *overrides: str) -> dict:
    from transformers import AutoModelForCausalLM

    runs = tmp_path / "runs"
    recipe = write_recipe(RECIPE.format(model=model, steps=2))
    args = ["run", recipe, "stages.expert.fp8=true", *overrides, "--run-dir", str(runs), "--no-progress"]
    assert main(args) == 0
    metrics = _manifest(runs)["metrics"]
    saved = AutoModelForCausalLM.from_pretrained(runs / "sft_test/expert/model")
    assert type(saved.model.layers[0].mlp.down_proj) is torch.nn.Linear  # saved as a plain model
    return metrics


def test_sft_with_fp8_records_converted_layers(write_recipe, tmp_path, tiny_path):
    metrics = _fp8_run(write_recipe, tmp_path, "tiny")
    assert len(metrics["fp8_layers"]) == 14 and list(metrics["fp8_skipped"]) == ["lm_head"]
    assert metrics["eval_loss_end"] < metrics["eval_loss_start"]


@pytest.mark.slow
def test_sft_with_fp8_on_embedded_model(write_recipe, tmp_path):
    # FP8 on CPU is emulation (about 3x slower than fp32): one step proves the stage runs end to end.
    metrics = _fp8_run(write_recipe, tmp_path, "embedded", "stages.expert.max_steps=1", "stages.expert.eval_size=0")
    assert len(metrics["fp8_layers"]) == 210  # hidden 576 is zero-padded to 640: every Linear converts
    assert metrics["steps"] == 1 and metrics["train_loss"] < 5


def test_keep_checkpoints_keeps_them(write_recipe, tmp_path):
    runs = tmp_path / "runs"
    path = write_recipe(RECIPE.format(model="tiny", steps=3))
    assert main(["run", path, "keep_checkpoints=true", "--run-dir", str(runs), "--no-progress"]) == 0
    assert (runs / "sft_test/expert/checkpoints/checkpoint-3/trainer_state.json").is_file()
    assert main(["validate", path, "keep_checkpoints=maybe"]) == 2


def test_a_run_cut_off_after_its_last_step_resumes_without_training_more(write_recipe, tmp_path):
    """Killed after the last checkpoint (step 4 of 4) but before the model and manifest were written: the rerun
    trains no step (transformers' Trainer, resumed there, would train a 5th) and writes the same model."""
    from safetensors.torch import load_file

    runs, stage = tmp_path / "runs", tmp_path / "runs/sft_test/expert"
    path = write_recipe(RECIPE.format(model="tiny", steps=4))
    assert main(["run", path, "keep_checkpoints=true", "--run-dir", str(runs), "--no-progress"]) == 0
    first = _manifest(runs)
    assert (stage / "checkpoints/checkpoint-4").is_dir()
    reference = load_file(stage / "model/model.safetensors")
    (stage / "manifest.json").unlink()
    shutil.rmtree(stage / "model")
    (stage / ".state.json").write_text(json.dumps({"key": first["key"], "started_at": 0, "pid": 1}))
    assert main(["run", path, "keep_checkpoints=true", "--run-dir", str(runs), "--no-progress"]) == 0
    again = _manifest(runs)
    assert again["resumed"] is True and again["metrics"]["resumed_from_step"] == 4
    assert again["metrics"]["steps"] == 4 and again["metrics"]["train_loss"] == first["metrics"]["train_loss"]
    assert not (stage / "checkpoints/checkpoint-5").exists()
    resumed = load_file(stage / "model/model.safetensors")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_bf16_auto_follows_the_device(monkeypatch):
    import torch

    import posttrain.model.loading as loading
    from posttrain.training import resolve_bf16

    assert resolve_bf16(True) is True and resolve_bf16(False) is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)
    assert resolve_bf16("auto") is True
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: False)  # an AVX2-only CPU would emulate bf16: fp32
    assert resolve_bf16("auto") is False


def test_bf16_setting_is_checked():
    from posttrain.config import parse
    from posttrain.stages.sft import SftConfig

    for ok in (True, False, "auto"):
        cfg, problems = parse(SftConfig, {"model": "tiny", "data": "builtin:chat_prompts", "bf16": ok})
        assert problems == [] and cfg.bf16 == ok
    _, problems = parse(SftConfig, {"model": "tiny", "data": "builtin:chat_prompts", "bf16": "yes"})
    assert len(problems) == 1 and "bf16" in problems[0] and "auto" in problems[0], problems


def test_padding_free_trains_the_same_weights_as_padding(write_recipe, tmp_path):
    """Rows of 2 to 6 terms differ in length, so padded batches carry padding; laid end to end with a block-diagonal
    mask they must give the same per-step losses and the same weights, with no compute on the padding."""
    recipe = RECIPE.format(model="tiny", steps=4).replace(
        "seed: 1}", "seed: 1, args: {min_terms: 2, max_terms: 6, min_digits: 1, max_digits: 3}}"
    )
    path = write_recipe(recipe)
    runs = {}
    for flag in ("true", "false"):
        runs[flag] = tmp_path / flag
        args = ["run", path, f"stages.expert.padding_free={flag}", "--run-dir", str(runs[flag]), "--no-progress"]
        assert main(args) == 0
        assert _manifest(runs[flag])["metrics"]["padding_free"] is (flag == "true")
    losses = [[r["loss"] for r in map(json.loads, (d / "sft_test/expert/metrics.jsonl").read_text().splitlines())
               if "loss" in r] for d in runs.values()]  # fmt: skip
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert_same_weights(runs["true"] / "sft_test/expert/model", runs["false"] / "sft_test/expert/model", atol=1e-5)
    eval_losses = [_manifest(d)["metrics"]["eval_loss_end"] for d in runs.values()]
    assert eval_losses[0] == pytest.approx(eval_losses[1], rel=1e-5)
