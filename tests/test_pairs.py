"""Preference pairs: built from judged samples (which rejections count, how many per prompt, identical texts
skipped), written per shard with the shard's commit and loadable with `load_dataset("parquet", ...)`, a corrupt
committed shard redone, and the loader's one-line errors for bad pair files (naming file, row and fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_gen.pairs import PairsConfig, load_pairs, make_pairs, pair_metrics, prompt_rows, split_pairs
from data_gen.rejection import R1_SYSTEM_PROMPT, FilterConfig, judge_batch, rejection_sample, summarize
from data_gen.shards import completed_shards, run_shards
from posttrain.errors import ConfigError, DataError
from posttrain.generation import Sample, SamplingConfig
from posttrain.recipe.loader import load_recipe
from rewards import build_reward

FILTERS = FilterConfig(max_repetition=0.3, format=["nonempty"], language=None, overthinking_ratio=None)
ROWS = [
    {"prompt": [{"role": "user", "content": "1 + 2 ="}], "answer": "3", "task": "chain_sum", "source_id": "a"},
    {"prompt": [{"role": "user", "content": "2 + 2 ="}], "answer": "4", "task": "chain_sum", "source_id": "b"},
]


def s(text: str, num_tokens: int = 10, finish: str = "stop") -> Sample:
    return Sample(text, num_tokens, finish)


class ScriptedGenerator:
    name = "scripted"

    def __init__(self, completions: list[list[Sample]]):
        self.completions, self.calls = completions, 0

    def generate(self, prompts, **kwargs):
        self.calls += 1
        return self.completions[: len(prompts)]

    def close(self):
        pass


# Prompt a (answer 3): correct, wrong, truncated, repetitive, correct. Prompt b (answer 4): only wrong answers.
SAMPLES = [
    [
        s("The answer is \\boxed{3}."),
        s("The answer is \\boxed{5}."),
        s("Let me see, one plus", 24, "length"),
        s("3 3 3 3 3 3 3 3 3 3 3 3"),
        s("1 + 2 = 3"),
    ],
    [s("It is 5"), s("It is 6"), s("It is 7"), s("It is 8"), s("It is 9")],
]


def _judge(config: PairsConfig) -> tuple[list[dict], dict]:
    reward = build_reward([{"name": "math"}])
    prompts = [r["prompt"] for r in ROWS]
    outcome = judge_batch(ROWS, prompts, SAMPLES, reward, FILTERS, source="data")
    return make_pairs(outcome.samples, config)


def test_pairs_take_the_rejections_asked_for_with_their_reason_and_provenance():
    rows, counts = _judge(PairsConfig(per_prompt=1))
    (pair,) = rows  # prompt b has no passing sample: no pair
    assert pair["prompt"] == ROWS[0]["prompt"]
    assert pair["chosen"] == [{"role": "assistant", "content": "The answer is \\boxed{3}."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "The answer is \\boxed{5}."}]
    assert (
        pair["rejected_filter"] == "incorrect" and pair["rejected_reason"] == "incorrect: verifier 'math' scored 0.0"
    )
    assert (pair["chosen_reward"], pair["rejected_reward"]) == (1.0, 0.0)
    assert json.loads(pair["chosen_rewards"]) == {"math": 1.0}
    assert (pair["chosen_sample_index"], pair["rejected_sample_index"]) == (0, 1)
    assert (pair["source_id"], pair["prompt_index"], pair["answer"]) == ("a", 0, "3")
    assert counts == {"pairs": 1, "pairs/prompts": 1, "pairs/rejected/incorrect": 1}


def test_pairs_per_prompt_use_every_sample_once_before_reusing_one():
    config = PairsConfig(per_prompt=5, rejected=["incorrect", "truncated", "repetition"])
    rows, counts = _judge(config)
    used = [(r["chosen_sample_index"], r["rejected_sample_index"]) for r in rows]
    assert used == [(0, 1), (4, 2), (0, 3)]  # 2 passing x 3 rejected: max(2, 3) distinct pairs
    assert [r["rejected_filter"] for r in rows] == ["incorrect", "truncated", "repetition"]
    assert counts["pairs"] == 3 and counts["pairs/rejected/truncated"] == 1


def test_identical_texts_are_skipped_and_counted():
    reward = build_reward([{"name": "math"}])
    samples = [[s("The answer is 3"), s("The answer is 3", 30, "length")]]
    outcome = judge_batch(ROWS[:1], [ROWS[0]["prompt"]], samples, reward, FILTERS)
    rows, counts = make_pairs(outcome.samples, PairsConfig(per_prompt=2, rejected=["truncated"]))
    assert rows == [] and counts["pairs/skipped_identical"] == 1


def test_pairs_config_is_checked(write_recipe):
    path = write_recipe(
        """
name: bad
model: tiny
stages:
  - name: distill
    type: rejection_sampling
    data: reasoning_gym:chain_sum
    rewards: [{name: math}]
    pairs: {per_prompt: -1, rejected: [incorect]}
"""
    )
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    text = "\n".join(e.value.problems)
    assert "pairs.per_prompt: must be >= 0" in text
    assert "pairs.rejected: unknown filter 'incorect' (did you mean 'incorrect'?)" in text


def test_pairs_are_written_per_shard_committed_and_load_with_datasets(tmp_path):
    from datasets import load_dataset

    rows = [{**ROWS[0], "source_id": f"p{i}"} for i in range(3)]
    gen = ScriptedGenerator([SAMPLES[0]] * 2)
    pairs = PairsConfig(per_prompt=2, rejected=["incorrect", "truncated"])
    opts = dict(sampling=SamplingConfig(n=5), filters=FILTERS, show_progress=False, pairs=pairs)
    counts = run_shards(gen, rows, build_reward([{"name": "math"}]), tmp_path, shard_size=2, **opts)
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    ds = load_dataset("parquet", data_files=str(tmp_path / "pairs" / "*.parquet"), split="train")
    assert len(ds) == 6 and sorted(set(ds["source_id"])) == ["p0", "p1", "p2"]
    assert ds[0]["chosen"][0]["role"] == "assistant" and ds[0]["prompt"][-1]["role"] == "user"
    assert ds[0]["prompt"][0] == {"role": "system", "content": R1_SYSTEM_PROMPT}  # the prompt as the model saw it
    metrics = summarize(counts)
    assert metrics["pairs"] == 6 and metrics["pairs/prompts"] == 3
    assert metrics["pairs/rejected/incorrect"] == 3 and metrics["pairs/rejected/truncated"] == 3
    shard = json.loads((tmp_path / "shards" / "part-00001.json").read_text())
    assert shard["counts"]["pairs"] == 2  # the commit file counts the pairs it commits
    assert len(load_pairs(f"parquet:{tmp_path / 'pairs'}", "test")) == 6


def test_a_corrupt_committed_shard_is_redone(tmp_path):
    rows = [{**ROWS[0], "source_id": f"p{i}"} for i in range(4)]
    opts = dict(sampling=SamplingConfig(n=5), filters=FILTERS, show_progress=False)
    reward = build_reward([{"name": "math"}])
    run_shards(ScriptedGenerator([SAMPLES[0]] * 2), rows, reward, tmp_path, shard_size=2, **opts)
    assert sorted(completed_shards(tmp_path)) == [0, 1]
    pairs_file = tmp_path / "pairs" / "part-00001.parquet"
    pairs_file.write_bytes(pairs_file.read_bytes()[:-20])  # torn: the Parquet footer is gone
    (tmp_path / "rejected" / "part-00000.parquet").write_bytes(b"PAR1 not parquet at all")
    assert completed_shards(tmp_path) == {}  # both commit files removed
    again = ScriptedGenerator([SAMPLES[0]] * 2)
    counts = run_shards(again, rows, reward, tmp_path, shard_size=2, **opts)
    assert again.calls == 2 and counts["num_shards_resumed"] == 0 and counts["num_prompts"] == 4
    assert pq.read_table(tmp_path / "pairs").num_rows == 4


def test_rejection_sample_in_a_notebook_gives_samples_for_pairs():
    gen = ScriptedGenerator(SAMPLES)
    out = rejection_sample(gen, ROWS, build_reward([{"name": "math"}]), SamplingConfig(n=5), FILTERS)
    assert [x["verdict"] for x in out.samples[:5]] == ["kept", "incorrect", "truncated", "repetition", "kept"]
    assert len(make_pairs(out.samples, PairsConfig())[0]) == 1


# ---- loading pairs from files --------------------------------------------------------------------------------


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return f"jsonl:{path}"


GOOD = {"prompt": "What is 1 + 2?", "chosen": "3", "rejected": "5", "answer": "3"}


def test_load_pairs_accepts_strings_and_messages(tmp_path):
    src = _jsonl(
        tmp_path / "p.jsonl",
        [
            GOOD,
            {
                **GOOD,
                "chosen": [{"role": "assistant", "content": "It is 3"}],
                "prompt": [{"role": "user", "content": "1+2"}],
            },
        ],
    )
    ds = load_pairs(src, "stage 'rm': data")
    assert ds[0]["prompt"] == [{"role": "user", "content": "What is 1 + 2?"}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "3"}] and ds[1]["chosen"][0]["content"] == "It is 3"
    assert prompt_rows(ds)[0] == {"prompt": ds[0]["prompt"], "answer": "3"}


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {**GOOD, "rejected": "  "},
            "'rejected' is empty; every pair needs a non-empty chosen and rejected (drop the row)",
        ),
        ({**GOOD, "rejected": "3"}, "chosen and rejected are identical; a pair must prefer one response over another"),
        ({"prompt": "x", "chosen": "a"}, "'rejected' is missing"),
        (
            {**GOOD, "chosen": [{"role": "user", "content": "hi"}]},
            "'chosen' holds a user turn; give only the response",
        ),
    ],
)
def test_bad_pair_rows_name_the_file_and_line(tmp_path, bad, message):
    path = tmp_path / "p.jsonl"
    src = _jsonl(path, [GOOD, "", bad])  # a blank line: the bad row is on line 3
    with pytest.raises(DataError) as e:
        load_pairs(src, "stage 'rm': data")
    assert str(e.value).startswith(f"stage 'rm': data: {path}:3: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_column_and_a_source_without_pairs(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "answer": "3"}])
    with pytest.raises(DataError, match=r"has no column 'chosen' or 'rejected' .*pairs need 'prompt', 'chosen'"):
        load_pairs(src, "stage 'rm': data")
    folder = tmp_path / "pairs"
    run_shards(ScriptedGenerator([SAMPLES[1]]), ROWS[1:], build_reward([{"name": "math"}]), tmp_path,
               sampling=SamplingConfig(n=5), filters=FILTERS, show_progress=False)  # fmt: skip
    assert pq.read_metadata(folder / "part-00000.parquet").num_rows == 0
    with pytest.raises(DataError, match=r"holds no pairs; a rejection_sampling stage writes a pair only for"):
        load_pairs(str(folder), "stage 'rm': data")


def test_a_bad_row_in_a_parquet_folder_names_its_file_and_row(tmp_path):
    import pyarrow as pa

    folder = tmp_path / "pairs"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([GOOD, GOOD]), folder / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist([GOOD, {**GOOD, "chosen": ""}]), folder / "part-00001.parquet")
    with pytest.raises(DataError, match=rf"{folder}/part-00001.parquet: row 2: 'chosen' is empty"):
        load_pairs(f"parquet:{folder}", "x")
    pq.write_table(pa.Table.from_pylist([{"prompt": "x", "chosen": "a"}]), folder / "part-00001.parquet")
    with pytest.raises(DataError, match=r"part-00001.parquet' has no column 'rejected'"):
        load_pairs(f"parquet:{folder}", "x")


def test_split_holds_out_whole_prompts(tmp_path):
    rows = [{**GOOD, "prompt": f"q{i // 3}", "chosen": f"c{i}"} for i in range(30)]  # 10 prompts x 3 pairs
    ds = load_pairs(_jsonl(tmp_path / "p.jsonl", rows), "x")
    train, held = split_pairs(ds, 7, seed=0, where="x")
    assert len(held) == 9 and len(train) == 21  # 3 whole prompts: at least 7 pairs
    assert not {json.dumps(p) for p in train["prompt"]} & {json.dumps(p) for p in held["prompt"]}
    with pytest.raises(DataError, match="cannot spare eval_size=30"):
        split_pairs(ds, 30, seed=0, where="x")


def test_pair_metrics_count_ties_half_and_split_by_filter():
    m = pair_metrics([2.0, 1.0, 0.5, None], [1.0, 1.0, 1.5, 0.0], ["incorrect", "truncated", "incorrect", "x"])
    assert m["accuracy"] == 0.5 and m["margin"] == pytest.approx(0.0) and m["pairs"] == 3
    assert m["accuracy/incorrect"] == 0.5 and m["accuracy/truncated"] == 0.5 and m["pairs/incorrect"] == 2
