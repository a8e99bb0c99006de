"""The SFT mix builder on small literal inputs: exact counts per step, weights, determinism, bad sources, and a
build that is interrupted (in-process crash or kill -9) and rerun to the same output."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen.mix import Decontam, Dedup, MixSource, build_mix
from data_gen.mix.readers import KEPT_COLUMNS
from data_gen.sources import SourceConfig
from posttrain.errors import ConfigError, DataError

ASSETS = Path(__file__).parent / "assets"
NO_DECONTAM = Decontam(against=[])
WORDS = [f"{a}{b}{c}" for a in "bdfgklmnprstvz" for b in "aeiou" for c in "nrstlx"]


def _text(rng: np.random.Generator, num_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=num_words))


def _rows(seed: int, n: int, domain: str | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = {
            "messages": [{"role": "user", "content": _text(rng, 12)}, {"role": "assistant", "content": _text(rng, 40)}]
        }
        if domain:
            row["domain"] = domain
        rows.append(row)
    return rows


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _parquet(path: Path, rows: list[dict], row_group_size: int = 1000) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return f"parquet:{path}"


def _output(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))


def _digest(out: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out.glob("part-*.parquet")))).hexdigest()


def _build(sources, out: Path, **kwargs):
    kwargs.setdefault("decontaminate", NO_DECONTAM)
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("show_progress", False)
    return build_mix(sources, out / "dataset", **kwargs)


def test_counts_per_step_are_exact(tmp_path):
    result = _build([MixSource(data=f"jsonl:{ASSETS / 'mix_chat.jsonl'}", name="chat")], tmp_path)
    comp = result.composition
    assert comp["sources"]["chat"] == {
        **comp["sources"]["chat"],
        "input": 11,
        "chat_format": 6,
        "token_length": 6,
        "decontaminate": 6,
        "exact_dedup": 5,
        "near_dedup": 4,
        "target": 4,
        "output": 4,
        "repeats": 1.0,
    }
    assert comp["domains"]["math"]["input"] == 2 and comp["domains"]["math"]["near_dedup"] == 1
    removed = pq.read_table(tmp_path / "removed.parquet").to_pylist()
    by_row = {r["row"]: r for r in removed}
    assert by_row[3]["step"] == "exact_dedup" and by_row[3]["duplicate_of_row"] == 0
    assert by_row[4]["step"] == "near_dedup" and by_row[4]["duplicate_of_row"] == 1
    reasons = {r["row"]: r["reason"] for r in removed if r["step"] == "chat_format"}
    assert reasons == {
        5: "no messages",
        6: "unknown role (allowed: system, user, assistant)",
        7: "empty turn",
        8: "turns do not alternate user/assistant (system only first)",
        9: "last turn is not the assistant's",
    }
    out = _output(tmp_path / "dataset")
    assert sorted(out["source_row"].to_pylist()) == [0, 1, 2, 10]
    assert out.column_names == ["messages", "source", "domain", "repeat", "source_row", *KEPT_COLUMNS]
    assert out["answer"].null_count == out.num_rows  # the source has no gold columns: null, schema unchanged
    assert result.metrics["rows_out"] == 4 and result.metrics["removed.chat_format"] == 5
    card = (tmp_path / "dataset" / "README.md").read_text()
    assert "| chat | chat, math, writing | 11 | 6 | 6 | 6 | 5 | 4 | 4 | 4 | 100.0% | 1.0 |" in card
    assert (tmp_path / "composition.png").read_bytes()[:4] == b"\x89PNG"


def test_weights_are_honoured_to_one_row_and_upsampling_is_recorded(tmp_path):
    sources = [
        MixSource(data=_parquet(tmp_path / "a.parquet", _rows(1, 400)), weight=0.5, domain="math"),
        MixSource(data=_jsonl(tmp_path / "b.jsonl", _rows(2, 300)), weight=0.3, domain="code"),
        MixSource(data=_jsonl(tmp_path / "c.jsonl", _rows(3, 90)), weight=0.2, domain="chat"),
    ]
    result = _build(sources, tmp_path, size=1001, seed=3, rows_per_shard=128)
    counts = {s: c["output"] for s, c in result.composition["sources"].items()}
    # Largest-remainder rounding: every source within one row of weight * size, the total exact.
    assert counts == {"a": 501, "b": 300, "c": 200} and sum(counts.values()) == 1001
    out = _output(tmp_path / "dataset")
    assert out.num_rows == 1001 and len(list((tmp_path / "dataset").glob("part-*.parquet"))) == 8
    chat = out.filter(pa.compute.equal(out["source"], "c"))
    repeats = np.bincount(chat["repeat"].to_numpy())
    assert repeats.tolist() == [90, 90, 20]  # 200 = 2 x 90 + 20 upsampled once more
    assert result.composition["sources"]["c"]["repeats"] == round(200 / 90, 3)
    assert set(zip(out["source"].to_pylist(), out["domain"].to_pylist())) == {
        ("a", "math"),
        ("b", "code"),
        ("c", "chat"),
    }


def test_counts_and_weights_share_the_size(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", _rows(1, 50))
    b = _jsonl(tmp_path / "b.jsonl", _rows(2, 50))
    result = _build([MixSource(data=a, count=70), MixSource(data=b, weight=1.0)], tmp_path, size=100)
    assert {s: c["output"] for s, c in result.composition["sources"].items()} == {"a": 70, "b": 30}


def test_same_seed_same_output_and_workers_do_not_matter(tmp_path):
    rows = _rows(1, 650)
    rows[300] = rows[10]
    rows[450] = {"messages": [dict(m) for m in rows[20]["messages"]]}  # a near copy: one word changed
    rows[450]["messages"][1]["content"] = rows[20]["messages"][1]["content"].rsplit(" ", 1)[0] + " changed"
    src = [
        MixSource(data=_parquet(tmp_path / "a.parquet", rows, row_group_size=100)),
        MixSource(data=_jsonl(tmp_path / "b.jsonl", _rows(2, 200))),
    ]
    # chunks of 100 rows: the 650-row file's last chunk is half the size of the others, so the workers take the
    # chunks out of order (largest first) and the near-dedup bands run on both
    kwargs = {"size": 900, "seed": 7, "rows_per_shard": 250, "dedup": Dedup(near_threshold=0.8), "chunk_rows": 100}
    first = _build(src, tmp_path / "one", **kwargs)
    again = _build(src, tmp_path / "two", **kwargs, num_workers=2)
    assert _digest(tmp_path / "one" / "dataset") == _digest(tmp_path / "two" / "dataset")
    assert (
        first.composition["removed"]
        == again.composition["removed"]
        == {"chat_format": 0, "token_length": 0, "decontaminate": 0, "exact_dedup": 1, "near_dedup": 1}
    )
    assert (
        pq.read_table(tmp_path / "one" / "removed.parquet").to_pylist()
        == pq.read_table(tmp_path / "two" / "removed.parquet").to_pylist()
    )
    other = _build(src, tmp_path / "three", **{**kwargs, "seed": 8})
    assert _digest(tmp_path / "three" / "dataset") != _digest(tmp_path / "one" / "dataset")
    assert other.num_rows == 900


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("jsonl:{tmp}/nope.jsonl", "source 'nope': file {tmp}/nope.jsonl does not exist; fix the path"),
        (f"jsonl:{ASSETS / 'mix_wrong_columns.jsonl'}", "has no 'messages' column (columns: text); give each row"),
        (f"jsonl:{ASSETS / 'mix_empty.jsonl'}", "mix_empty.jsonl has no rows; point the source at a non-empty"),
        ("parquet:{tmp}/empty.parquet", "empty.parquet has no rows"),
        ("parquet:{tmp}/wrong.parquet", "wrong.parquet has no 'messages' column (columns: text, id)"),
        ("{tmp}/folder", "folder {tmp}/folder has no *.parquet or *.jsonl files"),
    ],
)
def test_bad_sources_get_one_line_errors(tmp_path, data, message):
    message_type = pa.struct([("role", pa.string()), ("content", pa.string())])
    pq.write_table(pa.table({"messages": pa.array([], pa.list_(message_type))}), tmp_path / "empty.parquet")
    pq.write_table(pa.table({"text": ["x"], "id": [1]}), tmp_path / "wrong.parquet")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError) as err:
        _build([MixSource(data=data.format(tmp=tmp_path))], tmp_path)
    assert message.format(tmp=tmp_path) in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_rows(1, 1)[0]) + "\n\n{not json\n")
    with pytest.raises(DataError, match=r"source 'bad': .*bad.jsonl:3: .*fix or delete the line"):
        _build([MixSource(data=f"jsonl:{path}")], tmp_path)


def test_config_problems_are_reported_together():
    sources = [MixSource(data="jsonl:a.jsonl", weight=1, count=3), MixSource(data="jsonl:a.jsonl", weight=-1)]
    with pytest.raises(ConfigError) as err:
        build_mix(sources, "out", size=None, dedup=Dedup(near_threshold=1.5), max_tokens=10)
    problems = err.value.problems
    assert "sources.0.weight: give weight (1) or count (3), not both" in problems
    assert "sources.1.weight: must be positive, got -1" in problems
    assert "sources: two sources are named 'a'; give them distinct `name`s" in problems
    assert any(p.startswith("size: weighted sources need a target `size`") for p in problems)
    assert "dedup.near_threshold: must be in (0, 1), got 1.5" in problems
    assert "max_tokens: the token-length filter needs a `tokenizer`" in problems


def test_every_input_format_and_domain_filter(tmp_path):
    import datasets

    rows = _rows(5, 40, domain="chat") + _rows(6, 20, domain="math")
    datasets.Dataset.from_list(rows[:30]).save_to_disk(str(tmp_path / "disk"))
    (tmp_path / "shards").mkdir()
    _parquet(tmp_path / "shards" / "part-00000.parquet", rows[30:45])
    _parquet(tmp_path / "shards" / "part-00001.parquet", rows[45:])
    pairs = [{"prompt": r["messages"][0]["content"], "completion": r["messages"][1]["content"]} for r in _rows(7, 10)]
    sources = [
        MixSource(data=f"hf-disk:{tmp_path / 'disk'}", name="disk"),
        MixSource(data=str(tmp_path / "shards"), name="shards", domains=["math"]),
        MixSource(data=_parquet(tmp_path / "pairs.parquet", pairs), name="pairs", domain="qa"),
    ]
    result = _build(sources, tmp_path)
    inputs = {s: c["input"] for s, c in result.composition["sources"].items()}
    assert inputs == {"disk": 30, "shards": 20, "pairs": 10}
    out = _output(tmp_path / "dataset")
    assert out.num_rows == 60
    pair_rows = out.filter(pa.compute.equal(out["source"], "pairs")).to_pylist()
    assert pair_rows[0]["messages"][1]["role"] == "assistant" and pair_rows[0]["domain"] == "qa"


def test_two_stage_sft_second_mix_keeps_the_chat_domain(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", _rows(1, 30, domain="chat") + _rows(2, 50, domain="reasoning"))
    _build([MixSource(data=a)], tmp_path / "all")
    second = _build([MixSource(data=str(tmp_path / "all" / "dataset"), domains=["chat"])], tmp_path / "chat")
    out = _output(tmp_path / "chat" / "dataset")
    assert out.num_rows == 30 and set(out["domain"].to_pylist()) == {"chat"}
    assert second.composition["sources"]["all"]["input"] == 30


def test_decontamination_finds_eval_ngrams(tmp_path):
    evals = [json.loads(x) for x in (ASSETS / "mix_eval.jsonl").read_text().splitlines()]
    rows = _rows(1, 6)
    rows[2]["messages"][0]["content"] = "Quick one: " + evals[0]["prompt"].upper() + " Thanks!"
    rows[4]["messages"][1]["content"] = "ways to climb a staircase of twelve steps"  # 8 words: too few
    against = [SourceConfig(source=f"jsonl:{ASSETS / 'mix_eval.jsonl'}")]
    result = _build(
        [MixSource(data=_jsonl(tmp_path / "a.jsonl", rows))],
        tmp_path,
        decontaminate=Decontam(against=against, ngram=13),
    )
    assert result.composition["removed"]["decontaminate"] == 1
    removed = pq.read_table(tmp_path / "removed.parquet").to_pylist()
    assert [(r["row"], r["eval_item"]) for r in removed] == [(2, f"jsonl:{ASSETS / 'mix_eval.jsonl'}:0")]


def test_token_length_filter_matches_a_full_count(tmp_path):
    from data_gen.mix.quality import TokenLength

    folder = _tiny_tokenizer(tmp_path / "tok")
    rng = np.random.default_rng(0)
    rows = [
        {
            "messages": [
                {"role": "user", "content": _text(rng, int(rng.integers(1, 60)))},
                {"role": "assistant", "content": _text(rng, int(rng.integers(1, 200)))},
            ]
        }
        for _ in range(200)
    ]
    length = TokenLength(str(folder), max_tokens=300)
    full = np.array(length.count([r["messages"] for r in rows]))
    # Counting piece by piece (cut at spaces) adds up to the whole count, and stops early past the limit.
    assert length.piecewise
    piecewise = np.array(length.count([r["messages"] for r in rows], stop_above=300))
    assert np.array_equal(piecewise[full <= 300], full[full <= 300])
    over, want = piecewise[full > 300], full[full > 300]  # exact, or negated: a partial count already past 300
    assert ((over == want) | ((over < -300) & (-over <= want))).all() and (over < 0).any()
    result = _build(
        [MixSource(data=_jsonl(tmp_path / "a.jsonl", rows))], tmp_path, tokenizer=str(folder), max_tokens=300
    )
    assert 0 < (full > 300).sum() < 200
    assert result.composition["removed"]["token_length"] == int((full > 300).sum())
    removed = pq.read_table(tmp_path / "removed.parquet").to_pylist()
    assert sorted(r["row"] for r in removed) == np.flatnonzero(full > 300).tolist()


@pytest.mark.parametrize("which", ["trained here", "SmolLM2"])
def test_token_length_word_bound_never_passes_the_true_count(tmp_path, tiny_path, which):
    """The ASCII-word lower bound (on for a GPT-2-style byte-level tokenizer): on texts built to trip it (accents,
    non-ASCII punctuation between words, underscores, contractions, added tokens inside the content), the words
    never outnumber the tokens, and the verdicts at every limit equal those of a full count."""
    from data_gen.mix.quality import TokenLength

    folder = _tiny_tokenizer(tmp_path / "tok") if which == "trained here" else tiny_path
    length = TokenLength(str(folder), max_tokens=50)
    assert length.piecewise and length.added is not None
    atoms = [
        "abc",
        "x",
        "42",
        "3.75",
        "café",
        "naïve",
        "—",
        "—.—",
        "a—b",
        "_",
        "a_b",
        "'s",
        "don't",
        "<|im_start|>",
        "im_start",
        "+=",
        "\n",
        "  ",
        "über",
        "日本語",
        "😀",
        "K",
        "İs",
        "e\u0301t",
        "HTTP/1.1",
        "\u00a0",
        "foo-bar",
    ]
    rng = np.random.default_rng(3)
    convs = []
    for _ in range(400):
        text = "".join(
            atoms[k] + [" ", "", "\n"][j]
            for k, j in zip(rng.integers(len(atoms), size=rng.integers(1, 80)), rng.integers(3, size=80))
        )
        convs.append([{"role": "user", "content": text}, {"role": "assistant", "content": text[::-1]}])
    # Words that SmolLM2 spells as one token each: a bound that counted "Qu" and "bec" apart would pass the count.
    accented = " ".join(["Québec São García façade Pokémon José"] * 40)
    convs.append([{"role": "user", "content": accented}, {"role": "assistant", "content": accented}])
    full = np.array(length.count(convs))
    rendered = [length.tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
    words = np.array([len(length._word_starts(t)) for t in rendered])
    assert (words <= full).all() and (words > 0).all()
    for limit in (5, 30, 60, 120):
        got = np.array(length.count(convs, stop_above=limit))
        assert np.array_equal((got < 0) | (got > limit), full > limit), limit
        assert np.array_equal(got[got >= 0], full[got >= 0]) and (-got[got < 0] <= full[got < 0]).all()
    # A conversation with more words than the limit is not tokenized at all: its count is its number of words.
    many = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": " ".join(["ab"] * 80)}]]
    assert length.count(many, stop_above=50) == [
        -len(length._word_starts(length.tokenizer.apply_chat_template(many[0])))
    ]


def test_token_length_word_bound_is_off_for_other_pre_tokenizers(tmp_path):
    """A pre-tokenizer that keeps "a_b" in one piece (Whitespace: \\w+) breaks the bound, so it stays off."""
    from tokenizers import Tokenizer, pre_tokenizers

    from data_gen.mix.quality import TokenLength

    folder = _tiny_tokenizer(tmp_path / "tok")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(use_regex=False)]
    )
    tok.save(str(folder / "tokenizer.json"))
    length = TokenLength(str(folder), max_tokens=50)
    assert length.added is None


def _tiny_tokenizer(folder: Path) -> Path:
    """A byte-level BPE trained on a few hundred words, with a ChatML template: built offline in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 3, trainer)
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "<|im_end|>"}))
    return folder


def test_crash_mid_write_then_rerun_gives_the_same_output(tmp_path, monkeypatch):
    import data_gen.mix.write as write

    src = [MixSource(data=_jsonl(tmp_path / "a.jsonl", _rows(1, 500)))]
    kwargs = {"size": 700, "seed": 1, "rows_per_shard": 100, "work_dir": tmp_path / "work"}
    _build(src, tmp_path / "clean", **{**kwargs, "work_dir": tmp_path / "clean-work"})
    finish, calls = write._finish_shard, []

    def crash_after_three(*args):
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        calls.append(args)
        finish(*args)

    monkeypatch.setattr(write, "_finish_shard", crash_after_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _build(src, tmp_path / "run", **kwargs)
    assert len(list((tmp_path / "run" / "dataset").glob("part-*.parquet"))) == 3
    (tmp_path / "run" / "dataset" / "part-00004.parquet.tmp").write_bytes(b"half a shard")
    monkeypatch.setattr(write, "_finish_shard", finish)
    calls.clear()
    _build(src, tmp_path / "run", **kwargs)
    assert _digest(tmp_path / "run" / "dataset") == _digest(tmp_path / "clean" / "dataset")
    assert not list((tmp_path / "run" / "dataset").glob("*.tmp")) and not (tmp_path / "work").exists()


KILL_SCRIPT = """
import sys
from data_gen.mix import Decontam, MixSource, build_mix
build_mix([MixSource(data=sys.argv[1], weight=1), MixSource(data=sys.argv[2], weight=1)], sys.argv[3], size=9000,
          seed=2, rows_per_shard=500, num_workers=1, chunk_rows=250, decontaminate=Decontam(against=[]),
          show_progress=False, work_dir=sys.argv[4])
"""


def test_kill_9_then_rerun_gives_the_same_output(tmp_path):
    a = _parquet(tmp_path / "a.parquet", _rows(1, 4000), row_group_size=250)
    b = _parquet(tmp_path / "b.parquet", _rows(2, 4000), row_group_size=250)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    out, work = tmp_path / "run" / "dataset", tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, a, b, str(out), str(work)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and len(list(work.glob("scan/*/chunk-*.npz"))) < 4:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build finished before it could be killed"
    assert 4 <= len(list(work.glob("scan/*/chunk-*.npz"))) < 32
    sources = [MixSource(data=a, weight=1), MixSource(data=b, weight=1)]
    kwargs = {"size": 9000, "seed": 2, "rows_per_shard": 500, "chunk_rows": 250}
    _build(sources, tmp_path / "run", **kwargs, work_dir=work)
    _build(sources, tmp_path / "clean", **kwargs)
    assert _digest(out) == _digest(tmp_path / "clean" / "dataset")


def test_finished_build_is_returned_as_is(tmp_path):
    src = [MixSource(data=_jsonl(tmp_path / "a.jsonl", _rows(1, 50)))]
    first = _build(src, tmp_path)
    stamp = (tmp_path / "dataset" / "part-00000.parquet").stat().st_mtime_ns
    again = _build(src, tmp_path)
    assert again.composition == first.composition
    assert (tmp_path / "dataset" / "part-00000.parquet").stat().st_mtime_ns == stamp


def test_verifier_columns_are_kept_from_sources_that_have_them(tmp_path, monkeypatch):
    """Rows of a rejection-sampling dataset keep source_id and their gold (answer, tests, entry_point, metadata,
    task) through the mix and a second mix; other sources' rows get nulls; the scan never reads those columns."""
    import data_gen.mix.scan as scan
    from data_gen.mix.write import OUTPUT_SCHEMA
    from data_gen.rejection import GOLD_COLUMNS
    from data_gen.shards import KEPT_SCHEMA

    assert set(KEPT_COLUMNS) == {*GOLD_COLUMNS, "source_id"}
    gold = []
    for i, row in enumerate(_rows(1, 30)):
        gold.append(
            {
                **row,
                "sample_type": "r1",
                "source": "reasoning_gym:chain_sum",
                "source_id": f"chain_sum/{i}",
                "answer": None if i == 3 else str(i * 7),
                "tests": f"assert f({i}) == {i * 7}",
                "entry_point": "f",
                "metadata": json.dumps({"terms": i}),
                "task": "chain_sum",
            }
        )
    pq.write_table(pa.Table.from_pylist(gold, schema=KEPT_SCHEMA), tmp_path / "distill.parquet")
    other = [{**r, "answer": 42, "metadata": {"level": i}} for i, r in enumerate(_rows(2, 20))]  # not strings
    sources = [
        MixSource(data=f"parquet:{tmp_path / 'distill.parquet'}", name="distill"),
        MixSource(data=_jsonl(tmp_path / "other.jsonl", other), name="other"),
        MixSource(data=_jsonl(tmp_path / "plain.jsonl", _rows(3, 10)), name="plain"),
    ]
    scanned = []
    read = scan.read_chunk
    monkeypatch.setattr(scan, "read_chunk", lambda *a, **k: scanned.append(k) or read(*a, **k))
    _build(sources, tmp_path / "one")
    assert scanned and all(not k.get("keep_columns") for k in scanned)
    out = pq.read_table(tmp_path / "one" / "dataset" / "part-00000.parquet")
    assert out.schema.equals(OUTPUT_SCHEMA) and out.num_rows == 60
    rows = {(r["source"], r["source_row"]): r for r in out.to_pylist()}
    for i, g in enumerate(gold):
        assert {k: rows["distill", i][k] for k in KEPT_COLUMNS} == {k: g[k] for k in KEPT_COLUMNS}
    assert rows["other", 5]["answer"] == "42" and json.loads(rows["other", 5]["metadata"]) == {"level": 5}
    assert rows["other", 5]["tests"] is None and rows["plain", 0]["source_id"] is None
    again = _build([MixSource(data=str(tmp_path / "one" / "dataset"), name="again")], tmp_path / "two")
    assert again.num_rows == 60
    second = pq.read_table(tmp_path / "two" / "dataset" / "part-00000.parquet").to_pylist()
    assert sorted(r["source_id"] for r in second if r["task"]) == sorted(g["source_id"] for g in gold)


def test_a_shared_system_prompt_does_not_make_different_problems_near_duplicates(tmp_path):
    """R1 rows all carry one long system prompt; near dedup compares the user and assistant turns only."""
    rng = np.random.default_rng(3)
    system = {"role": "system", "content": _text(rng, 60)}

    def row(a: int, b: int) -> list[dict]:
        return [
            {"role": "user", "content": f"State the final answer to the following arithmetic problem: {a} + {b} ="},
            {"role": "assistant", "content": f"Let me evaluate it step by step. {a} + {b} = {a + b}"},
        ]

    problems = [(a, b) for a in range(1, 9) for b in range(1, 4)]
    rows = [{"messages": [system, *row(a, b)]} for a, b in problems]
    rows.append(
        {"messages": [system, *row(2, 2)[:1], {"role": "assistant", "content": row(2, 2)[1]["content"] + "."}]}
    )
    result = _build([MixSource(data=_jsonl(tmp_path / "r1.jsonl", rows), name="r1")], tmp_path, size=None)
    counts = result.composition["sources"]["r1"]
    assert counts["exact_dedup"] == len(problems) + 1  # the copy of 2 + 2 differs by a full stop
    assert counts["near_dedup"] == len(problems)  # every problem stays; the near copy of 2 + 2 goes
    removed = pq.read_table(tmp_path / "removed.parquet").to_pylist()
    assert [(r["row"], r["step"], r["duplicate_of_row"]) for r in removed] == [(len(problems), "near_dedup", 4)]
