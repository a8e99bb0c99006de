"""The eval library on literal samples (exact metrics) and the `eval` stage on the tiny model."""

from __future__ import annotations

import json

import pytest

from posttrain.errors import ConfigError
from posttrain.evaluation import evaluate, pass_at_k
from posttrain.generation import Sample
from posttrain.recipe.loader import load_recipe
from posttrain.recipe.runner import Runner
from rewards import build_reward


class ScriptedGenerator:
    """Returns prepared completions. For testing the code around a generator only."""

    name = "scripted"

    def __init__(self, completions):
        self.completions = completions

    def generate(self, prompts, **kwargs):
        return self.completions


def test_metrics_from_literal_samples():
    rows = [
        {"prompt": [{"role": "user", "content": "1+1"}], "answer": "2"},
        {"prompt": [{"role": "user", "content": "2+2"}], "answer": "4"},
    ]
    samples = [
        [Sample("\\boxed{2}", 4, "stop"), Sample("it is 3", 5, "stop")],
        [Sample("go go go go go go", 8, "length"), Sample("\\boxed{5}", 3, "stop")],
    ]
    reward = build_reward([{"name": "math"}, {"name": "repetition"}])
    metrics, records = evaluate(ScriptedGenerator(samples), rows, reward, n=2)
    assert metrics["pass@1"] == 0.25
    assert metrics["pass@2"] == 0.5  # prompt 1 solved once in two, prompt 2 never
    assert metrics["reward/math"] == 0.25
    assert metrics["reward/repetition"] == -0.1875
    assert metrics["mean_tokens"] == 5.0
    assert metrics["truncated"] == 0.25
    assert metrics["repetition"] == pytest.approx((0 + 0 + 0.75 + 0) / 4, abs=1e-4)  # 'go go go' 3-grams
    assert [r["passed"] for r in records] == [True, False, False, False]


def test_pass_at_k_estimator():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)


RECIPE = """
name: ev
model: tiny
stages:
  - name: eval_base
    type: eval
    data: {source: "reasoning_gym:chain_sum", size: 5, seed: 9}
    rewards: [{name: math}, {name: repetition, weight: 0.5}]
    sampling: {n: 3, temperature: 1.0, max_tokens: 6}
    generator: transformers
"""


def test_eval_stage_on_the_tiny_model(write_recipe, tmp_path, tiny_path):
    Runner(load_recipe(write_recipe(RECIPE), run_dir=str(tmp_path)), show_progress=False).run(report=lambda *a: None)
    stage = tmp_path / "ev" / "eval_base"
    metrics = json.loads((stage / "manifest.json").read_text())["metrics"]
    samples = [json.loads(x) for x in (stage / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 15 and metrics["num_prompts"] == 5 and metrics["num_samples"] == 3
    for key in ("pass@1", "pass@3", "reward/math", "reward/repetition", "reward/total", "mean_tokens", "truncated"):
        assert key in metrics
    assert metrics["pass@3"] >= metrics["pass@1"]
    assert metrics["truncated"] == round(sum(s["finish_reason"] == "length" for s in samples) / 15, 4)
    assert metrics["mean_tokens"] == round(sum(s["num_tokens"] for s in samples) / 15, 2)
    logged = json.loads((stage / "metrics.jsonl").read_text())
    assert logged["pass@1"] == metrics["pass@1"] and metrics["backend"] == "transformers"


def test_eval_config_errors(write_recipe):
    bad = RECIPE.replace("generator: transformers", "generator: transformers\n    pass_reward: maths")
    with pytest.raises(ConfigError, match="pass_reward: 'maths' is not one of the rewards .*did you mean 'math'"):
        load_recipe(write_recipe(bad))
