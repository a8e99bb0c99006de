"""Rejection sampling: filters and keep policies on literal samples, the two sample types, sharded output with resume
after a real kill, and the stage's config and data errors. The run on the real embedded model with vLLM is in
test_generation_vllm.py."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import kill_run_after

from data_gen.rejection import FilterConfig, judge_samples, rejection_sample, summarize
from data_gen.shards import run_shards
from posttrain.errors import ConfigError, DataError
from posttrain.generation import Sample, SamplingConfig
from posttrain.recipe.loader import load_recipe
from posttrain.recipe.runner import Runner
from rewards import build_reward


def run_recipe(path: str, run_dir: Path) -> None:
    Runner(load_recipe(path, run_dir=str(run_dir)), show_progress=False).run(report=lambda *a, **k: None)


NO_FILTERS = FilterConfig(drop_truncated=False, max_repetition=None, format=[], language=None, overthinking_ratio=None)


def s(text: str, num_tokens: int = 10, finish: str = "stop") -> Sample:
    return Sample(text, num_tokens, finish)


class ScriptedGenerator:
    """Returns prepared completions; records what it was asked. For testing the code around a generator only."""

    name = "scripted"

    def __init__(self, completions: list[list[Sample]]):
        self.completions, self.calls = completions, []

    def generate(self, prompts, **kwargs):
        self.calls.append((prompts, kwargs))
        return self.completions[: len(prompts)]

    def close(self):
        pass


@pytest.mark.parametrize(
    "sample, filters, verdict",
    [
        (s("The answer is 4", 128, "length"), FilterConfig(), "truncated"),
        (s("The answer is 4", 300), FilterConfig(max_tokens=200), "too_long"),
        (s("4 4 4 4 4 4 4 4 4 4 4 4 4 4"), FilterConfig(), "repetition"),
        (s("   "), FilterConfig(), "format"),
        (s("The answer is 4"), FilterConfig(format=["think"]), "format"),
        (s("The answer is 4"), FilterConfig(format=["boxed"]), "format"),
        (s("Ответ: четыре, the answer is 4"), FilterConfig(), "language"),
    ],
)
def test_each_filter_rejects_its_pathology(sample, filters, verdict):
    assert judge_samples([sample], [True], [1.0], filters) == [verdict]


def test_clean_correct_sample_is_kept_and_wrong_one_is_not():
    good = s("<think>2 + 2 = 4, check: 4 - 2 = 2.</think> \\boxed{4}")
    filters = FilterConfig(format=["think", "boxed"])
    assert judge_samples([good, good], [True, False], [1.0, 0.0], filters) == ["kept", "incorrect"]


def test_overthinking_is_relative_to_the_shortest_correct_sample():
    samples = [s("short answer 4", 40), s("long answer 4", 100), s("medium answer 4", 70), s("wrong", 10)]
    filters = FilterConfig(overthinking_ratio=2.0, overthinking_min_tokens=20)
    assert judge_samples(samples, [True, True, True, False], [1.0] * 4, filters) == [
        "kept",
        "overthinking",
        "kept",
        "incorrect",
    ]


@pytest.mark.parametrize(
    "keep, expected",
    [
        ("all_correct", ["kept", "kept", "kept", "incorrect"]),
        ("shortest_correct", ["not_selected", "kept", "not_selected", "incorrect"]),
        ("best", ["not_selected", "not_selected", "kept", "incorrect"]),
        ("first_k", ["kept", "kept", "not_selected", "incorrect"]),
    ],
)
def test_keep_policies(keep, expected):
    samples = [s("one", 30), s("two", 20), s("three", 25), s("four", 5)]
    totals = [1.0, 1.0, 1.5, 0.0]
    assert judge_samples(samples, [True, True, True, False], totals, NO_FILTERS, keep, keep_k=2) == expected


ROWS = [
    {"prompt": [{"role": "user", "content": "1 + 2 ="}], "answer": "3", "task": "chain_sum", "source_id": "a"},
    {"prompt": [{"role": "user", "content": "2 + 2 ="}], "answer": "4", "task": "chain_sum", "source_id": "b"},
]


def test_two_sample_types_with_provenance():
    gen = ScriptedGenerator([[s("The answer is \\boxed{3}", 7), s("It is 5", 4)], [s("no idea", 3), s("hmm", 2)]])
    out = rejection_sample(
        gen, ROWS, build_reward([{"name": "math"}]), SamplingConfig(n=2), NO_FILTERS, system_prompt="Reflect."
    )
    # Generation saw the system prompt; the r1 row keeps it, the original row is <problem, reference>.
    assert gen.calls[0][0][0][0] == {"role": "system", "content": "Reflect."}
    r1, original = out.rows
    assert r1["sample_type"] == "r1" and r1["messages"][0]["content"] == "Reflect."
    assert r1["messages"][-1] == {"role": "assistant", "content": "The answer is \\boxed{3}"}
    assert (r1["source_id"], r1["prompt_index"], r1["sample_index"], r1["num_tokens"]) == ("a", 0, 0, 7)
    assert json.loads(r1["rewards"]) == {"math": 1.0}
    assert original["sample_type"] == "original" and original["messages"][0]["role"] == "user"
    assert "\\boxed{3}" in original["messages"][-1]["content"]
    # Prompt b had no correct sample, so it yields neither type.
    assert out.counts["kept"] == 1 and out.counts["type/original"] == 1
    assert out.counts["rejected/incorrect"] == 3 and len(out.rejected) == 3
    metrics = summarize(out.counts)
    assert metrics["acceptance"] == 0.25 and metrics["source/chain_sum/prompts_kept"] == 0.5
    assert metrics["filter/incorrect/pass_rate"] == 0.25


def test_shards_commit_and_resume_without_regenerating(tmp_path):
    rows = [{**ROWS[i % 2], "source_id": f"p{i}"} for i in range(5)]
    reward = build_reward([{"name": "math"}])
    opts = dict(sampling=SamplingConfig(n=1), filters=NO_FILTERS, pass_threshold=0.0, show_progress=False)
    gen = ScriptedGenerator([[s("The answer is 3")]] * 2)
    first = run_shards(gen, rows, reward, tmp_path, shard_size=2, **opts)
    assert first["num_shards"] == 3 and len(gen.calls) == 3
    # Simulate a crash inside shard 2: its data file was written but not its commit file.
    (tmp_path / "shards" / "part-00002.json").unlink()
    (tmp_path / "dataset" / "part-00001.parquet.tmp").write_text("half a file")
    again = ScriptedGenerator([[s("The answer is 3")]] * 2)
    second = run_shards(again, rows, reward, tmp_path, shard_size=2, **opts)
    assert len(again.calls) == 1 and again.calls[0][1]["seed"] == 4  # only shard 2: seed + 2 shards x 2 prompts x n=1
    assert second["num_shards_resumed"] == 2 and second["num_prompts"] == 5
    assert not list(tmp_path.glob("*/*.tmp"))
    ids = pq.read_table(tmp_path / "dataset").column("source_id").to_pylist()
    assert sorted(set(ids)) == [f"p{i}" for i in range(5)]


def test_an_empty_shard_is_readable_and_a_commit_without_data_is_redone(tmp_path):
    from data_gen.sources import load_source

    # Every sample answers 3: right for shard 1's prompts (answer 3), wrong for shard 0's (answer 9).
    rows = [{**ROWS[0], "answer": "9" if i < 2 else "3", "source_id": f"p{i}"} for i in range(4)]
    opts = dict(sampling=SamplingConfig(n=1), filters=NO_FILTERS, show_progress=False)
    gen = ScriptedGenerator([[s("The answer is 3")]] * 2)
    run_shards(gen, rows, build_reward([{"name": "math"}]), tmp_path, shard_size=2, **opts)
    assert len(load_source(f"parquet:{tmp_path / 'dataset'}")) == 4  # r1 + original of p2 and p3; shard 0 empty
    (tmp_path / "dataset" / "part-00001.parquet").unlink()  # committed, then its data lost
    again = ScriptedGenerator([[s("The answer is 3")]] * 2)
    counts = run_shards(again, rows, build_reward([{"name": "math"}]), tmp_path, shard_size=2, **opts)
    assert len(again.calls) == 1 and counts["num_prompts"] == 4 and counts["num_shards_resumed"] == 1


def test_per_source_counts_with_a_slash_in_the_source():
    counts = {"num_samples": 4, "kept": 1, "source/jsonl:data/a.jsonl/samples": 4, "source/jsonl:data/a.jsonl/kept": 1}
    assert summarize(counts)["source/jsonl:data/a.jsonl/acceptance"] == 0.25


RECIPE = """
name: rs
model: tiny
stages:
  - name: distill
    type: rejection_sampling
    data: {{source: "reasoning_gym:chain_sum", size: {size}, seed: 1}}
    rewards: [{{name: repetition}}]
    pass_threshold: -1.0
    sampling: {{n: 2, temperature: 1.0, max_tokens: 8}}
    generator: {{backend: transformers}}
    filters: {{drop_truncated: false, max_repetition: null, language: null, format: [], overthinking_ratio: null}}
    shard_size: 3
"""


def kept_rows(stage_dir: Path) -> list[tuple]:
    table = pq.read_table(stage_dir / "dataset").to_pylist()
    return sorted((r["source_id"], r["sample_index"], r["messages"][-1]["content"]) for r in table)


def test_stage_end_to_end_on_the_tiny_model(write_recipe, tmp_path, tiny_path):
    run_recipe(write_recipe(RECIPE.format(size=6)), tmp_path)
    stage = tmp_path / "rs" / "distill"
    metrics = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert metrics["num_prompts"] == 6 and metrics["num_samples"] == 12 and metrics["kept"] == 12
    assert metrics["backend"] == "transformers" and metrics["num_tokens"] > 0
    rows = pq.read_table(stage / "dataset").to_pylist()
    assert {r["sample_type"] for r in rows} == {"r1", "original"}
    # Every sample was kept, so no prompt has a rejected side: the pairs output exists and is empty.
    assert metrics["pairs"] == 0 and pq.read_table(stage / "pairs").num_rows == 0
    assert [json.loads(x)["step"] for x in (stage / "metrics.jsonl").read_text().splitlines()] == [0, 1]


@pytest.mark.slow
def test_kill_and_rerun_gives_the_prompts_of_an_uninterrupted_run(write_recipe, tmp_path, tiny_path):
    recipe = write_recipe(RECIPE.format(size=30))
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    stage = killed / "rs" / "distill"
    assert kill_run_after(recipe, killed, stage / "shards" / "part-00001.json")
    assert not (stage / "manifest.json").exists(), "the run finished before it was killed; slow it down"
    committed = {p.name: p.stat().st_mtime_ns for p in (stage / "dataset").glob("*.parquet")}
    run_recipe(recipe, killed)
    run_recipe(recipe, clean)
    metrics = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert metrics["resumed_shards"] >= 2 and metrics["num_prompts"] == 30
    for name, mtime in committed.items():  # finished shards were not generated again
        if (stage / "shards" / name.replace(".parquet", ".json")).exists():
            assert (stage / "dataset" / name).stat().st_mtime_ns == mtime
    resumed, uninterrupted = kept_rows(stage), kept_rows(clean / "rs" / "distill")
    assert len(resumed) == len(set(resumed)) == 30 * 2 + 30  # no duplicates: 2 r1 rows + 1 original per prompt
    assert resumed == uninterrupted


def test_config_errors_are_reported_together(write_recipe):
    path = write_recipe(
        """
name: bad
model: tiny
stages:
  - name: distill
    type: rejection_sampling
    data: reasoning_gym:chain_sum
    rewards: [{name: code}]
    keep: first_k
    keep_k: 0
    verifier: math
    sample_types: [r1, originl]
    filters: {format: [thinking]}
"""
    )
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    text = "\n".join(e.value.problems)
    assert "keep_k: must be positive" in text
    assert "needs the dataset column 'tests'" in text  # code reward on a source without tests
    assert "verifier: 'math' is not one of the rewards" in text
    assert "unknown type 'originl'" in text and "did you mean 'original'" in text
    assert "format: unknown check 'thinking'" in text
    assert all(line.startswith(path) for line in e.value.problems)


def test_unknown_keep_policy(write_recipe):
    path = write_recipe(RECIPE.format(size=3).replace("shard_size: 3", "shard_size: 3\n    keep: shortest"))
    with pytest.raises(ConfigError, match="keep: 'shortest' is not allowed .did you mean 'shortest_correct'"):
        load_recipe(path)


def test_empty_source_is_a_clear_error(write_recipe, tmp_path, tiny_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    recipe = RECIPE.format(size=3).replace('"reasoning_gym:chain_sum", size: 3, seed: 1', f'"jsonl:{empty}"')
    with pytest.raises(DataError, match="has no rows"):
        run_recipe(write_recipe(recipe), tmp_path / "runs")


def test_every_written_row_can_be_re_verified_from_its_own_columns(tmp_path):
    """Kept and rejected rows carry the gold their verifier read: scoring them again from the Parquet alone gives
    the reward recorded beside them."""
    rows = [{**ROWS[0], "metadata": {"terms": 2}}, ROWS[1]]
    gen = ScriptedGenerator([[s("The answer is \\boxed{3}"), s("It is 5")], [s("4"), s("so \\boxed{5}")]])
    reward = build_reward([{"name": "math"}])
    run_shards(gen, rows, reward, tmp_path, shard_size=2, sampling=SamplingConfig(n=2), filters=NO_FILTERS)
    kept = pq.read_table(tmp_path / "dataset").to_pylist()
    rejected = pq.read_table(tmp_path / "rejected").to_pylist()
    assert {r["answer"] for r in kept} == {"3", "4"} and json.loads(kept[0]["metadata"]) == {"terms": 2}
    assert kept[0]["task"] == "chain_sum" and kept[0]["tests"] is None
    r1 = [r for r in kept if r["sample_type"] == "r1"]
    again = build_reward([{"name": "math"}])
    assert again([r["messages"][-1]["content"] for r in r1], answer=[r["answer"] for r in r1]) == [
        r["reward"] for r in r1
    ]
    assert again([r["completion"] for r in rejected], answer=[r["answer"] for r in rejected]) == [0.0, 0.0]
