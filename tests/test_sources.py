import json

import pytest

from data_gen.sources import SourceConfig, load_source
from posttrain.errors import DataError


def test_jsonl_prompt_string_and_messages(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [
        {"prompt": "hi", "answer": "1"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_source(f"jsonl:{path}")
    assert ds[0]["prompt"] == [{"role": "user", "content": "hi"}]
    assert ds[1]["prompt"] == [{"role": "user", "content": "q"}]


def test_malformed_line_names_file_and_line_or_is_skipped(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{not json\n{"other": 1}\n{"prompt": "ok2"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: .*fix the line or set on_error: skip"):
        load_source(f"jsonl:{path}")
    stats = {}
    ds = load_source(SourceConfig(f"jsonl:{path}", on_error="skip"), stats)
    assert len(ds) == 2 and stats == {"num_rows": 2, "num_skipped": 2}


def test_missing_file_and_empty_and_unknown_scheme(tmp_path):
    with pytest.raises(DataError, match="no file or folder matches"):
        load_source("jsonl:/nope.jsonl")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="has no rows"):
        load_source(f"jsonl:{empty}")
    with pytest.raises(DataError, match=r"unknown source type 'jsnl' \(did you mean 'jsonl'\?\)"):
        load_source("jsnl:x.jsonl")


def test_parquet_folder_and_hf_disk(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "p1", "answer": "1"}, {"prompt": "p2", "answer": "2"}])
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "part-00000.parquet"))
    ds.save_to_disk(str(tmp_path / "disk"))
    for source in (f"parquet:{tmp_path}/pq", str(tmp_path / "pq"), f"hf-disk:{tmp_path}/disk"):
        loaded = load_source(source)
        assert len(loaded) == 2 and loaded[1]["prompt"] == [{"role": "user", "content": "p2"}], source
    with pytest.raises(DataError, match="needs 'prompt' or 'messages'"):
        datasets.Dataset.from_list([{"text": "x"}]).to_parquet(str(tmp_path / "t.parquet"))
        load_source(f"parquet:{tmp_path}/t.parquet")


def test_reasoning_gym_is_seeded_and_keeps_answers():
    a = load_source(SourceConfig("reasoning_gym:chain_sum", size=5, seed=3))
    b = load_source(SourceConfig("reasoning_gym:chain_sum", size=5, seed=3))
    assert len(a) == 5 and a["answer"] == b["answer"] and a["prompt"] == b["prompt"]
    meta = json.loads(a[0]["metadata"])
    assert meta["source_dataset"] == "chain_sum" and "expression" in meta
    assert a[0]["source_id"] == "chain_sum/3/0"


def test_humaneval_has_164_problems_with_tests():
    ds = load_source("humaneval")
    assert len(ds) == 164
    assert ds[0]["source_id"] == "HumanEval/0" and "def check(candidate)" in ds[0]["tests"]
    assert ds[0]["entry_point"] == "has_close_elements"


def test_several_sources_with_domains_become_one_table():
    from data_gen.sources import SourceConfig, load_sources

    math = SourceConfig(source="reasoning_gym:chain_sum", size=3, seed=1, domain="math")
    code = SourceConfig(source="humaneval", size=2, domain="code")
    ds = load_sources([math, code])
    assert len(ds) == 5 and ds["domain"] == ["math"] * 3 + ["code"] * 2
    assert ds["origin"] == ["reasoning_gym:chain_sum"] * 3 + ["humaneval"] * 2
    assert ds["answer"][3] is None and ds["entry_point"][0] is None and ds["tests"][4].startswith("\n\nMETADATA")


def test_an_empty_stage_output_is_no_rows_in_a_list_and_an_error_alone(tmp_path, caplog):
    """Rejection sampling that keeps nothing writes one empty Parquet part with its schema (r1_logic, once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_gen.sources import load_data

    folder = tmp_path / "dataset"
    folder.mkdir()
    pq.write_table(
        pa.table({"messages": pa.array([], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))}),
        folder / "part-00000.parquet",
    )
    task = SourceConfig("reasoning_gym:chain_sum", size=4, seed=1)
    ds = load_data([SourceConfig(str(folder)), task], "stage 'x': data", require_prompt=False)
    assert len(ds) == 4 and ds["messages"] == [None] * 4 and "messages" in ds.column_names
    assert f"stage 'x': data[0] '{folder}' has no rows; the other sources are used" in caplog.text
    with pytest.raises(DataError, match=rf"source '{folder}' has no rows"):
        load_source(str(folder))
    with pytest.raises(DataError, match=r"stage 'x': data: every source has no rows"):
        load_data([SourceConfig(str(folder))] * 2, "stage 'x': data", require_prompt=False)


def test_reasoning_gym_args_a_task_cannot_use_name_the_task_and_the_args():
    with pytest.raises(
        DataError, match=r"reasoning_gym task 'chain_sum' rejects args .*max_terms must be >= min_terms"
    ):
        load_source(SourceConfig("reasoning_gym:chain_sum", size=3, args={"min_terms": 5, "max_terms": 2}))
    with pytest.raises(DataError, match=r"reasoning_gym task 'aiw' rejects args .*weights"):
        load_source(SourceConfig("reasoning_gym:aiw", size=3, args={"task_types": ["siblings"]}))


def test_exclude_drops_rows_that_ask_an_eval_question(tmp_path):
    sums = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "allow_negation": False}
    held_out = SourceConfig(source="reasoning_gym:chain_sum", size=32, seed=1001, args=sums)
    questions = {row["prompt"][-1]["content"] for row in load_source(held_out)}
    plain = load_source(SourceConfig(source="reasoning_gym:chain_sum", size=160, seed=1, args=sums))
    overlap = sum(row["prompt"][-1]["content"] in questions for row in plain)
    assert overlap > 0  # two one-digit terms: a small space, so a training draw repeats eval questions
    stats = {}
    cfg = SourceConfig(source="reasoning_gym:chain_sum", size=160, seed=1, args=sums, exclude=[held_out])
    kept = load_source(cfg, stats)
    assert len(kept) == 160 - overlap and stats["num_excluded"] == overlap
    assert not any(row["prompt"][-1]["content"] in questions for row in kept)
    # a file's rows are matched on their last user turn, whitespace aside
    path = tmp_path / "eval.jsonl"
    spaced = "  ".join(next(iter(questions)).split(" "))
    path.write_text(json.dumps({"messages": [{"role": "user", "content": spaced}]}) + "\n")
    by_file = load_source(
        SourceConfig(
            source="reasoning_gym:chain_sum",
            size=160,
            seed=1,
            args=sums,
            exclude=[SourceConfig(source=f"jsonl:{path}")],
        )
    )
    assert len(by_file) == 160 - sum(row["prompt"][-1]["content"] == next(iter(questions)) for row in plain)
    with pytest.raises(DataError, match="every one of its 32 rows asks a question of its `exclude` sets"):
        load_source(SourceConfig(source="reasoning_gym:chain_sum", size=32, seed=1001, args=sums, exclude=[held_out]))
