"""Eval gates: a stage whose gate on an earlier stage's metrics fails stops the run before it, with one line naming
the metric, its value and the threshold; --ignore-gates runs on; bad gates are validation errors."""

from __future__ import annotations

import pytest

from posttrain.cli import main
from posttrain.errors import ConfigError
from posttrain.recipe.gates import GateConfig, gate_failure
from posttrain.recipe.loader import load_recipe

CHAIN = """
name: gated
stages:
  - {name: b, type: echo, value: 2, gate: GATE}
  - {name: a, type: echo, value: 1, num_shards: 2}
  - {name: c, type: echo, input: "${stages.b.dataset}"}
"""


def test_a_failed_gate_stops_the_run_before_the_gated_stage(write_recipe, tmp_path, capsys):
    path = write_recipe(CHAIN.replace("GATE", "{metric: a/shards_written, min: 3}"))
    assert load_recipe(path).stage_names == ["a", "b", "c"]  # the gate's stage runs first
    runs = str(tmp_path / "runs")
    assert main(["run", path, "--run-dir", runs, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"gate of stage 'b' ({path}:4) failed: a/shards_written = 2 is below the floor 3" in err
    assert "--ignore-gates" in err and (tmp_path / "runs/gated/a/manifest.json").exists()
    assert not (tmp_path / "runs/gated/b").exists() and not (tmp_path / "runs/gated/c").exists()
    assert main(["run", path, "--run-dir", runs, "--no-progress", "--ignore-gates"]) == 0
    assert "[gate] b: failed but ignored (--ignore-gates)" in capsys.readouterr().err


def test_a_passing_gate_says_so(write_recipe, tmp_path, capsys):
    path = write_recipe(CHAIN.replace("GATE", "{metric: a/shards_written, max: 2}"))
    assert main(["run", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    assert "[gate] b: passed (a/shards_written)" in capsys.readouterr().err


def test_min_delta_against_a_baseline_or_the_metrics_own_start():
    manifests = {
        "base": {"metrics": {"pass@1": 0.2}},
        "expert": {"metrics": {"pass@1": 0.25}},
        "rl": {"metrics": {"eval_start/reward/total": 0.3, "eval_end/reward/total": 0.28, "eval_loss_end": 1.0}},
    }
    assert gate_failure(GateConfig("expert/pass@1", baseline="base/pass@1", min_delta=0.0), manifests) is None
    failure = gate_failure(GateConfig("expert/pass@1", baseline="base/pass@1", min_delta=0.1), manifests)
    assert failure == "expert/pass@1 - base/pass@1 = +0.05 is below min_delta 0.1"
    failure = gate_failure(GateConfig("rl/eval_end/reward/total", min_delta=0.0), manifests)
    assert failure == "rl/eval_end/reward/total - rl/eval_start/reward/total = -0.02 is below min_delta 0"
    with pytest.raises(Exception, match=r"recorded no number 'pass@2' \(did you mean 'pass@1'\?\)"):
        gate_failure(GateConfig("base/pass@2", min=0.1), manifests)


@pytest.mark.parametrize(
    "gate, expected",
    [
        ("{metric: zz/shards_written, min: 1}", "gate: no stage 'zz'"),
        ("{metric: b/shards_written, min: 1}", "gate: a stage cannot gate on its own metrics ('b')"),
        ("{metric: a/shards_written}", "gate: give at least one of min, max or min_delta"),
        ("{metric: shards_written, min: 1}", "gate.metric: 'shards_written' is not STAGE/KEY"),
        ("{metric: a/x, minimum: 1}", "gate.minimum: unknown field (did you mean 'min'?)"),
    ],
)
def test_bad_gates_are_validation_errors(write_recipe, gate, expected):
    with pytest.raises(ConfigError) as e:
        load_recipe(write_recipe(CHAIN.replace("GATE", gate)))
    assert any(expected in p for p in e.value.problems), e.value.problems
