"""The reward_model stage on TRL's RewardTrainer with the tiny model: it learns held-out pairs (accuracy and margin
before and after in the manifest), its output loads as a sequence classifier and plugs into the `reward_model`
reward (which scores the held-out pairs as the manifest says), a recipe can point the reward at the stage's output,
the reward refuses a causal LM, bad pairs are one-line errors, and (slow) a kill -9 mid-run then a resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import kill_run_after

from posttrain.cli import main

RECIPE = """
name: rm_test
model: tiny
stages:
  - name: rm
    type: reward_model
    data: jsonl:{pairs}
    eval_size: 16
    baselines: [{{name: math}}]
    max_steps: {steps}
    batch_size: 8
    learning_rate: 1.0e-3
    max_length: 128
    logging_steps: 1
    save_steps: 3
"""


def write_pairs(path: Path, num_prompts: int = 40) -> Path:
    """Pairs a small model can learn: a short boxed right answer against a rambling wrong one."""
    from data_gen.sources import SourceConfig, load_source

    rng = random.Random(0)
    args = {"min_terms": 2, "max_terms": 2, "max_digits": 1}
    rows = load_source(SourceConfig("reasoning_gym:chain_sum", size=num_prompts, seed=1, args=args)).to_list()
    with path.open("w") as f:
        for k, row in enumerate(rows):
            wrong = int(row["answer"]) + rng.choice([-2, -1, 1, 2])
            pair = {
                "prompt": row["prompt"],
                "answer": row["answer"],
                "chosen": f"The answer is \\boxed{{{row['answer']}}}.",
                "rejected": "Let me think " + "and think " * rng.randint(2, 6) + str(wrong),
                "rejected_filter": "incorrect" if k % 2 else "repetition",
            }
            f.write(json.dumps(pair) + "\n")
    return path


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs.jsonl")


def _run(write_recipe, tmp_path, pairs, steps=6, *overrides) -> dict:
    runs = tmp_path / "runs"
    path = write_recipe(RECIPE.format(pairs=pairs, steps=steps))
    assert main(["run", path, *overrides, "--run-dir", str(runs), "--no-progress"]) == 0
    return json.loads((runs / "rm_test/rm/manifest.json").read_text())["metrics"]


def test_reward_model_learns_pairs_and_plugs_into_the_reward(write_recipe, tmp_path, pairs, tiny_path):
    from transformers import AutoModelForSequenceClassification

    from rewards import build_reward

    m = _run(write_recipe, tmp_path, pairs)
    assert m["steps"] == 6 and m["eval_pairs"] >= 16 and m["train_pairs"] + m["eval_pairs"] == 40
    assert m["eval_end/accuracy"] >= 0.9 and m["eval_end/accuracy"] > m["eval_start/accuracy"]
    assert m["eval_end/margin"] > m["eval_start/margin"] + 0.5
    assert {"eval_end/accuracy/incorrect", "eval_end/accuracy/repetition"} <= set(m)
    assert m["baseline/math/pairs"] == m["eval_pairs"] and m["baseline/math/accuracy"] == 1.0  # it reads `answer`
    stage = tmp_path / "runs/rm_test/rm"
    rows = [r for r in (stage / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    model = AutoModelForSequenceClassification.from_pretrained(stage / "model")
    assert model.config.num_labels == 1 and model.config.architectures == ["LlamaForSequenceClassification"]
    # The reward scores the held-out pairs the way the stage measured them.
    held = [json.loads(x) for x in (stage / "eval_pairs.jsonl").read_text().splitlines()]
    reward = build_reward([{"name": "reward_model", "model": str(stage / "model")}])
    prompts = [r["prompt"] for r in held]
    chosen = reward([r["chosen"] for r in held], prompts=prompts)
    rejected = reward([r["rejected"] for r in held], prompts=prompts)
    assert chosen == pytest.approx([r["score_chosen"] for r in held], abs=1e-3)
    assert rejected == pytest.approx([r["score_rejected"] for r in held], abs=1e-3)
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(held)
    assert accuracy == pytest.approx(m["eval_end/accuracy"])


def test_a_grpo_stage_can_use_the_trained_reward_model(write_recipe, tmp_path, pairs):
    from posttrain.recipe.loader import load_recipe

    text = RECIPE.format(pairs=pairs, steps=2) + (
        "  - name: rl\n    type: grpo\n    data: reasoning_gym:chain_sum\n    rewards:\n"
        "      - {name: math}\n      - {name: reward_model, model: '${stages.rm.model}', weight: 0.5}\n"
    )
    recipe = load_recipe(write_recipe(text), run_dir=str(tmp_path / "runs"))  # the folder does not exist yet
    assert recipe.stage_names == ["rm", "rl"]


def test_the_reward_refuses_a_causal_lm_and_names_the_stage_that_makes_one(write_recipe, tiny_path, capsys):
    from posttrain.errors import ModelError
    from rewards.reward_model import load_classifier

    text = "name: x\nmodel: tiny\nstages:\n  - name: rl\n    type: grpo\n    data: reasoning_gym:chain_sum\n"
    text += f"    rewards: [{{name: reward_model, model: '{tiny_path}'}}]\n"
    assert main(["validate", write_recipe(text)]) == 2
    err = capsys.readouterr().err
    assert "rewards.0.model: " in err and "is a LlamaForCausalLM: it has no classification head" in err
    assert "`type: reward_model` stage" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelError, match="'embedded' is a causal LM"):
        load_classifier("embedded")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "1 + 1 =", "chosen": "2", "rejected": "2"}, ":3: chosen and rejected are identical"),
        ({"prompt": "1 + 1 =", "chosen": "", "rejected": "3"}, ":3: 'chosen' is empty"),
    ],
)
def test_bad_pairs_are_one_line_errors(write_recipe, tmp_path, capsys, row, message):
    bad = tmp_path / "bad.jsonl"
    good = {"prompt": "1 + 1 =", "chosen": "2", "rejected": "3"}
    bad.write_text("\n".join(json.dumps(r) for r in (good, good, row)) + "\n")
    path = write_recipe(RECIPE.format(pairs=bad, steps=2))
    assert main(["run", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"stage 'rm': data: {bad}{message}" in err


@pytest.mark.slow
def test_kill_9_mid_training_then_resume(write_recipe, tmp_path, pairs, tiny_path):
    runs = tmp_path / "runs"
    path = write_recipe(RECIPE.format(pairs=pairs, steps=12))
    first = runs / "rm_test/rm/checkpoints/checkpoint-3/trainer_state.json"
    assert kill_run_after(path, runs, first), "no checkpoint was written before the kill"
    assert not (runs / "rm_test/rm/manifest.json").exists()
    assert (runs / "rm_test/rm/eval_start.json").exists()
    assert main(["run", path, "--run-dir", str(runs), "--no-progress"]) == 0
    m = json.loads((runs / "rm_test/rm/manifest.json").read_text())
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] >= 3 and m["metrics"]["steps"] == 12
    assert m["metrics"]["eval_start/accuracy"] < m["metrics"]["eval_end/accuracy"]
    steps = [json.loads(x)["step"] for x in (runs / "rm_test/rm/metrics.jsonl").read_text().splitlines()]
    assert sorted({s for s in steps if s > 0}) == list(range(1, 13))


@pytest.mark.slow
def test_reward_model_from_the_embedded_model_loads_and_scores(write_recipe, tmp_path, pairs):
    from transformers import AutoModelForSequenceClassification

    m = _run(write_recipe, tmp_path, pairs, 2, "model=embedded", "stages.rm.learning_rate=1.0e-5")
    assert m["steps"] == 2 and m["eval_end/pairs"] == m["eval_pairs"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "runs/rm_test/rm/model")
    assert model.config.num_hidden_layers == 30 and model.score.out_features == 1


def test_a_reference_reading_reward_model_scores_as_the_reward_does(write_recipe, tmp_path, pairs, capsys):
    """With `reference: answer` the model reads `Reference answer: ...` in the prompt, in training and in the
    reward alike: the reward given the raw prompts and the `answer` column reproduces the stage's held-out scores,
    and scores a row without a reference None."""
    from rewards import build_reward
    from rewards.model_utils import with_reference

    m = _run(write_recipe, tmp_path, pairs, 4, "stages.rm.reference=answer")
    stage = tmp_path / "runs/rm_test/rm"
    held = [json.loads(x) for x in (stage / "eval_pairs.jsonl").read_text().splitlines()]
    assert "Reference answer" not in json.dumps(held[0]["prompt"])  # written as given
    entry = {"name": "reward_model", "model": str(stage / "model"), "reference": "answer"}
    reward = build_reward([entry])
    prompts, answers = [r["prompt"] for r in held], [r["answer"] for r in held]
    chosen = reward([r["chosen"] for r in held], prompts=prompts, answer=answers)
    assert chosen == pytest.approx([r["score_chosen"] for r in held], abs=1e-3)
    plain = build_reward([{"name": "reward_model", "model": str(stage / "model")}])
    shown = [with_reference(p, a) for p, a in zip(prompts, answers)]
    assert plain([r["chosen"] for r in held], prompts=shown) == pytest.approx(chosen, abs=1e-5)
    assert reward(["x", "y"], prompts=prompts[:2], answer=[answers[0], None])[1] is None
    assert m["eval_end/pairs"] == len(held)
    # a reference column the pairs do not have: one line naming the stage, the field and the columns
    assert main(["run", write_recipe(RECIPE.format(pairs=pairs, steps=2)), "stages.rm.reference=gold",
                 "--run-dir", str(tmp_path / "r2"), "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "stage 'rm': reference: the data pairs have no 'gold' column" in err and "drop `reference`" in err
