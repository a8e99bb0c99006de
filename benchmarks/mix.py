"""Benchmark of the SFT mix builder at DeepSeek-V3's scale: 1.5M synthetic chat examples, every step enabled.

It generates five sources (Parquet, Parquet with a domain column, JSONL, a `save_to_disk` folder, and Parquet in
prompt/completion form) with planted items, all counted: exact duplicates (half of them differing only in case and
whitespace, a fifth across sources), near duplicates (one or two words changed or inserted, or punctuation
changed; their true 5-word-shingle Jaccard similarity is measured), conversations containing HumanEval problems or
held-out reasoning-gym `gsm_symbolic` questions, over-long conversations and malformed ones. Then it builds the
1.5M mix with `build_mix` (chat format, token length with the embedded model's tokenizer, exact and near dedup,
decontamination, weighted sampling, shuffled shards) in a child process while sampling the RSS of its whole process
tree, and does the same for a naive baseline: `datasets` load + `concatenate_datasets` + pandas
`drop_duplicates` on the conversation text (exact only, no normalisation). `--rounds N` alternates the two N
times. Each run reports wall time, CPU seconds of its process tree (what the work costs whatever else runs on
the machine), peak RSS, the load average when it started, and recall and precision on the planted items.
`--datatrove` then runs near dedup alone side by side: `build_mix` with only near dedup on, and datatrove's
MinHash deduplication (signatures, LSH buckets, clusters; `pip install datatrove`) on the same rows with the same
shingles, both scored per planted pair (caught when not both copies are kept).

    python benchmarks/mix.py                      # 1.5M rows; the data is cached in --data-dir
    python benchmarks/mix.py --rounds 2 --datatrove
    python benchmarks/mix.py --rows 15000000 --skip-baseline
    python benchmarks/mix.py --rows 100000 --skip-baseline

Targets on a 2-core machine: at 1.5M rows at most 0.5x the baseline's wall time and 1.5 GiB; at 15M at most
10 minutes and 4 GiB; exact recall 1.0, near recall at least datatrove's with precision 1.0, decontamination 1.0.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NORMAL, EXACT, NEAR, CONTAM, LONG, INVALID = range(6)
KIND_NAMES = ["normal", "exact dup", "near dup", "contaminated", "over-long", "malformed"]
# name, format, share of rows, domain, prompt words, response words
SOURCES = [
    ("math", "parquet", 0.30, "math", (20, 50), (80, 200)),
    ("code", "parquet-domain", 0.20, "code", (15, 40), (60, 180)),
    ("chat", "jsonl", 0.20, "chat", (8, 40), (40, 160)),
    ("writing", "hf-disk", 0.1667, "writing", (20, 60), (120, 260)),
    ("reasoning", "pair", 0.1333, "reasoning", (20, 50), (100, 240)),
]
RATES = {EXACT: 0.04, NEAR: 0.04, CONTAM: 0.001, LONG: 0.001, INVALID: 0.002}
GSM = {"source": "reasoning_gym:gsm_symbolic", "size": 200, "seed": 1234}
THRESHOLD = 0.85  # near-dedup Jaccard threshold, ours and datatrove's alike
BATCH = 20_000


class Vocab:
    """Pseudo-words; half the draws come from 100 frequent ones, as in real text."""

    def __init__(self, rng: np.random.Generator, size: int = 30_000):
        syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + ["an", "er", "in", "on", "or", "st"]
        words = set()
        while len(words) < size:
            words.add("".join(rng.choice(syllables, size=rng.integers(1, 4))))
        self.words = sorted(words)
        data = "".join(self.words).encode()
        self.bytes = np.frombuffer(data, np.uint8)
        self.lengths = np.array([len(w) for w in self.words])
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        common = rng.random(n) < 0.5
        return np.where(common, rng.integers(0, 100, n), rng.integers(0, len(self.words), n))

    def texts(self, rng: np.random.Generator, num_words: np.ndarray) -> list[str]:
        """One text per entry of num_words, built with numpy (no Python loop over words)."""
        ids = self.sample(rng, int(num_words.sum()))
        sep = np.where(rng.random(len(ids)) < 0.08, 2, np.where(rng.random(len(ids)) < 0.05, 1, 0))
        ends = np.cumsum(num_words) - 1
        sep[ends] = 3
        sep_bytes = [b" ", b", ", b". ", b"."]
        word_len = self.lengths[ids]
        total = word_len + np.array([1, 2, 2, 1])[sep]
        out = np.empty(int(total.sum()), np.uint8)
        starts = np.concatenate([[0], np.cumsum(total)[:-1]])
        pos = np.arange(int(word_len.sum())) - np.repeat(np.cumsum(word_len) - word_len, word_len)
        out[np.repeat(starts, word_len) + pos] = self.bytes[np.repeat(self.starts[ids], word_len) + pos]
        for code, value in enumerate(sep_bytes):
            at = starts[sep == code] + word_len[sep == code]
            for k, byte in enumerate(value):
                out[at + k] = byte
        row_bytes = np.add.reduceat(total, np.concatenate([[0], ends[:-1] + 1]))
        offsets = np.concatenate([[0], np.cumsum(row_bytes)]).astype(np.int64)
        arr = pa.LargeStringArray.from_buffers(len(num_words), pa.py_buffer(offsets), pa.py_buffer(out))
        return arr.to_pylist()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def jaccard(a: list[dict], b: list[dict], k: int = 5) -> float:
    def shingles(messages: list[dict]) -> set:
        w = [x for m in messages for x in _words(m["content"])]
        return {tuple(w[i : i + k]) for i in range(max(1, len(w) - k + 1))}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def _vary_exact(rng: np.random.Generator, messages: list[dict]) -> list[dict]:
    """A copy that differs only in case and whitespace half the time."""
    out = [dict(m) for m in messages]
    if rng.random() < 0.5:
        m = out[-1]
        words = m["content"].split(" ")
        i = int(rng.integers(len(words)))
        words[i] = words[i].upper()
        m["content"] = "  ".join(words[:3]) + " " + " ".join(words[3:]) + "\n"
    return out


def _vary_near(rng: np.random.Generator, vocab: Vocab, messages: list[dict]) -> list[dict]:
    """One or two words changed or inserted in the response, or only its punctuation changed."""
    out = [dict(m) for m in messages]
    m = out[-1]
    words = m["content"].split(" ")
    choice = rng.random()
    if choice < 0.3:
        for i in rng.choice(len(words), size=min(3, len(words)), replace=False):
            words[i] = words[i] + ";"
    else:
        for _ in range(1 if choice < 0.7 else 2):
            i = int(rng.integers(len(words)))
            new = vocab.words[int(rng.integers(100, len(vocab.words)))]
            if rng.random() < 0.5:
                words[i] = new
            else:
                words.insert(i, new)
    m["content"] = " ".join(words)
    return out


def _eval_texts() -> tuple[list[str], list[str]]:
    from data_gen.sources import SourceConfig, load_source

    humaneval = [r["code_prompt"] for r in load_source("humaneval")]
    gsm = [r["prompt"][0]["content"] for r in load_source(SourceConfig(**GSM))]
    return humaneval, gsm


def _planted(rng, vocab, kind, reservoir, evals, shape) -> tuple[list[dict], int, int, float]:
    """Messages of one planted row and (original source, original row, jaccard)."""
    if kind in (EXACT, NEAR):
        src, row, original = reservoir[int(rng.integers(len(reservoir)))]
        if kind == EXACT:
            return _vary_exact(rng, original), src, row, 1.0
        varied = _vary_near(rng, vocab, original)
        return varied, src, row, jaccard(original, varied)
    filler = vocab.texts(rng, np.array([int(rng.integers(*shape[1]))]))[0]
    if kind == CONTAM:
        humaneval, gsm = evals
        text = (
            humaneval[int(rng.integers(len(humaneval)))] if rng.random() < 0.67 else gsm[int(rng.integers(len(gsm)))]
        )
        question = "Help me with this.\n" + text + "\n" + filler[:300]
        return [{"role": "user", "content": question}, {"role": "assistant", "content": filler}], -1, -1, 0
    if kind == LONG:
        long_text = vocab.texts(rng, np.array([int(rng.integers(3000, 4000))]))[0]
        return [{"role": "user", "content": filler[:200]}, {"role": "assistant", "content": long_text}], -1, -1, 0
    broken = [
        [{"role": "user", "content": filler}, {"role": "assistant", "content": "  "}],
        [{"role": "assistant", "content": filler}, {"role": "user", "content": filler}],
        [{"role": "user", "content": filler}],
        [{"role": "user", "content": filler}, {"role": "bot", "content": filler}],
    ]
    return broken[int(rng.integers(len(broken)))], -1, -1, 0


def _base_rows(rng, vocab, name, n, shape) -> list[list[dict]]:
    prompts = vocab.texts(rng, rng.integers(*shape[0], size=n))
    answers = vocab.texts(rng, rng.integers(*shape[1], size=n))
    rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for p, a in zip(prompts, answers)]
    if name == "chat":
        more = np.flatnonzero(rng.random(n) < 0.2)
        extra = vocab.texts(rng, rng.integers(*shape[1], size=2 * len(more)))
        for j, i in enumerate(more):
            rows[i] += [
                {"role": "user", "content": extra[2 * j][:300]},
                {"role": "assistant", "content": extra[2 * j + 1]},
            ]
        for i in np.flatnonzero(rng.random(n) < 0.3):
            rows[i] = [{"role": "system", "content": "You are a helpful assistant."}, *rows[i]]
    return rows


def generate(data_dir: Path, num_rows: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Write the five sources and `labels.npz`; returns the labels per source."""
    rng = np.random.default_rng(seed)
    vocab, evals = Vocab(rng), _eval_texts()
    data_dir.mkdir(parents=True, exist_ok=True)
    reservoir: list[tuple[int, int, list[dict]]] = []
    labels = {}
    for s, (name, fmt, share, domain, *shape) in enumerate(SOURCES):
        n = (
            int(round(num_rows * share))
            if s < len(SOURCES) - 1
            else num_rows - sum(int(round(num_rows * x[2])) for x in SOURCES[:-1])
        )
        kinds = np.zeros(n, np.int8)
        orig = np.full((n, 2), -1, np.int64)
        sim = np.zeros(n, np.float32)
        writer = _Writer(data_dir, name, fmt, domain)
        for start in range(0, n, BATCH):
            rows = _base_rows(rng, vocab, name, min(BATCH, n - start), shape)
            draw = rng.random(len(rows))
            edges = np.cumsum([RATES[k] for k in (EXACT, NEAR, CONTAM, LONG, INVALID)])
            batch_kinds = np.where(draw < edges[-1], np.searchsorted(edges, draw, side="right") + 1, NORMAL)
            if not reservoir:
                batch_kinds[np.isin(batch_kinds, [EXACT, NEAR])] = NORMAL
            for i in np.flatnonzero(batch_kinds):
                rows[i], o_src, o_row, sim[start + i] = _planted(rng, vocab, batch_kinds[i], reservoir, evals, shape)
                orig[start + i] = (o_src, o_row)
            kinds[start : start + len(rows)] = batch_kinds
            plain = np.array([len(r) == 2 for r in rows]) & (batch_kinds == NORMAL)
            for i in rng.choice(np.flatnonzero(plain), size=200, replace=False):
                entry = (s, start + int(i), rows[i])
                if len(reservoir) < 20_000:
                    reservoir.append(entry)
                else:
                    reservoir[int(rng.integers(len(reservoir)))] = entry
            writer.write(rows)
        writer.close()
        labels[name] = {"kind": kinds, "orig": orig, "jaccard": sim}
        print(f"  generated {name}: {n:,} rows ({fmt})", flush=True)
    np.savez(data_dir / "labels.npz", **{f"{k}.{f}": v for k, d in labels.items() for f, v in d.items()})
    (data_dir / "done").write_text(json.dumps({"rows": num_rows, "seed": seed}))
    return labels


class _Writer:
    """Appends batches of rows to one source in its format."""

    def __init__(self, data_dir: Path, name: str, fmt: str, domain: str):
        self.fmt, self.domain, self.batches = fmt, domain, []
        self.path = data_dir / (f"{name}.jsonl" if fmt == "jsonl" else name)
        self.pq = None
        if fmt in ("parquet", "parquet-domain", "pair"):
            self.path.mkdir(exist_ok=True)

    def write(self, rows: list[list[dict]]) -> None:
        if self.fmt == "jsonl":
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps({"messages": r}) + "\n" for r in rows)
            return
        if self.fmt == "pair":
            # Only a plain [user, assistant] pair survives the format; anything else keeps an empty (invalid) prompt.
            plain = [len(r) == 2 and (r[0]["role"], r[1]["role"]) == ("user", "assistant") for r in rows]
            table = pa.table(
                {
                    "prompt": [r[0]["content"] if ok else "" for r, ok in zip(rows, plain)],
                    "completion": [r[-1]["content"] for r in rows],
                }
            )
        else:
            table = pa.table(
                {"messages": pa.array(rows, pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))}
            )
            if self.fmt == "parquet-domain":
                table = table.append_column("domain", pa.array([self.domain] * len(rows)))
        if self.fmt == "hf-disk":
            self.batches.append(table)
            return
        if self.pq is None:
            self.pq = pq.ParquetWriter(self.path / "part-00000.parquet", table.schema)
        self.pq.write_table(table, row_group_size=BATCH)

    def close(self) -> None:
        if self.pq is not None:
            self.pq.close()
        if self.fmt == "hf-disk":
            import datasets

            # In parts of <= 250k rows with given fingerprints: hashing one table of over 2 GB of text overflows.
            per_part = max(1, 250_000 // BATCH)
            parts = [
                datasets.Dataset(pa.concat_tables(self.batches[i : i + per_part]), fingerprint=f"bench-{i}")
                for i in range(0, len(self.batches), per_part)
            ]
            ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
            ds.save_to_disk(str(self.path), num_shards=len(parts))


def load_labels(data_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    with np.load(data_dir / "labels.npz") as data:
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            name, field = key.split(".")
            out.setdefault(name, {})[field] = data[key]
    return out


def _specs(data_dir: Path) -> list[tuple[str, str]]:
    paths = {"jsonl": "jsonl:{d}/{n}.jsonl", "hf-disk": "hf-disk:{d}/{n}"}
    return [(paths.get(fmt, "parquet:{d}/{n}").format(d=data_dir, n=name), fmt) for name, fmt, *_ in SOURCES]


def _ours(data_dir: str, out_dir: str, num_rows: int, workers: int, tokenizer: str, result_path: str) -> None:
    _build(data_dir, out_dir, num_rows, workers, tokenizer, result_path, near_only=False)


def _ours_near_only(data_dir: str, out_dir: str, num_rows: int, workers: int, result_path: str) -> None:
    """build_mix with only near dedup on (no chat or length check, no decontamination, no exact dedup)."""
    _build(data_dir, out_dir, num_rows, workers, None, result_path, near_only=True)


def _build(
    data_dir: str, out_dir: str, num_rows: int, workers: int, tokenizer: str | None, result_path: str, near_only: bool
) -> None:
    from data_gen.mix import Decontam, Dedup, MixSource, build_mix
    from data_gen.sources import SourceConfig

    sources = [
        MixSource(data=spec, name=name, weight=share, domain=None if fmt == "parquet-domain" else domain)
        for (spec, fmt), (name, _, share, domain, *_) in zip(_specs(Path(data_dir)), SOURCES)
    ]
    start = time.time()
    against = [] if near_only else [SourceConfig(source="humaneval"), SourceConfig(**GSM)]
    result = build_mix(
        sources,
        Path(out_dir) / "dataset",
        size=num_rows,
        seed=0,
        dedup=Dedup(exact=not near_only, near_threshold=THRESHOLD),
        decontaminate=Decontam(against=against),
        tokenizer=tokenizer,
        max_tokens=None if near_only else 4096,
        num_workers=workers,
    )
    Path(result_path).write_text(
        json.dumps(
            {
                "wall_s": time.time() - start,
                "num_rows": result.num_rows,
                "num_shards": result.num_shards,
                "metrics": result.metrics,
            }
        )
    )


def _baseline(data_dir: str, out_dir: str, result_path: str) -> None:
    """The naive way: load every source with `datasets`, concatenate, pandas drop_duplicates on the text."""
    import datasets

    datasets.disable_progress_bars()
    start, parts, cache = time.time(), [], str(Path(out_dir) / "hf-cache")
    for spec, fmt in _specs(Path(data_dir)):
        path = spec.split(":", 1)[1]
        if fmt == "jsonl":
            ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
        elif fmt == "hf-disk":
            ds = datasets.load_from_disk(path)
        else:
            ds = datasets.load_dataset("parquet", data_files=f"{path}/*.parquet", split="train", cache_dir=cache)
        if fmt == "pair":
            ds = ds.map(
                lambda b: {
                    "messages": [
                        [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
                        for p, c in zip(b["prompt"], b["completion"])
                    ]
                },
                batched=True,
                remove_columns=["prompt", "completion"],
            )
        parts.append(ds.select_columns(["messages"]))
    mix = datasets.concatenate_datasets(parts)
    mix = mix.map(lambda b: {"text": [json.dumps(m) for m in b["messages"]]}, batched=True)
    df = mix.select_columns(["text"]).to_pandas()  # only the text column: the whole rows would need ~10 GB here
    kept = df.drop_duplicates(subset="text").index.to_numpy()
    dropped = np.setdiff1d(np.arange(len(df)), kept)
    mix.select(kept).remove_columns("text").to_parquet(str(Path(out_dir) / "baseline.parquet"))
    np.save(Path(out_dir) / "baseline_dropped.npy", dropped)
    Path(result_path).write_text(json.dumps({"wall_s": time.time() - start, "num_rows": len(kept)}))


def measured(target, *args) -> dict:
    """Run `target(*args, result_path)` in a fresh process; return its result plus the peak RSS of its tree and
    the CPU seconds of the whole tree (user + system: what the work costs whatever else the machine runs)."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result_path = Path(args[1]) / f"{target.__name__}.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    proc = mp.get_context("spawn").Process(target=target, args=(*args, str(result_path)))
    start = time.time()
    proc.start()
    peak, stop = [0], threading.Event()

    def watch() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    proc.join()
    stop.set()
    thread.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed with exit code {proc.exitcode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    out = json.loads(result_path.read_text())
    out.update(peak_rss_gib=peak[0] / 2**30, process_s=time.time() - start, cpu_s=cpu)
    return out


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def score_ours(labels: dict, removed: pa.Table) -> dict[str, float]:
    """Recall and precision of every step on the planted items, from removed.parquet."""
    steps = {name: np.full(len(lab["kind"]), "", object) for name, lab in labels.items()}
    for src, row, step in zip(*(removed[c].to_numpy(zero_copy_only=False) for c in ("source", "row", "step"))):
        steps[src][row] = step
    kind = np.concatenate([labels[n]["kind"] for n in steps])
    step = np.concatenate([steps[n] for n in steps])
    sim = np.concatenate([labels[n]["jaccard"] for n in steps])
    out = {}
    for name, k, st in (
        ("exact", EXACT, "exact_dedup"),
        ("near", NEAR, "near_dedup"),
        ("decontam", CONTAM, "decontaminate"),
        ("length", LONG, "token_length"),
        ("format", INVALID, "chat_format"),
    ):
        hit = (kind == k) & (step == st)
        out[f"{name}_recall"] = _ratio(int(hit.sum()), int((kind == k).sum()))
        out[f"{name}_precision"] = _ratio(int(hit.sum()), int((step == st).sum()))
    near = kind == NEAR
    out["near_removed_any_step"] = _ratio(int((near & (step != "")).sum()), int(near.sum()))
    for lo, hi in ((0.0, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.0), (1.0, 1.01)):
        band = near & (sim >= lo) & (sim < hi)
        out[f"near_recall_j[{lo:.2f},{min(hi, 1):.2f}{']' if hi > 1 else ')'}"] = _ratio(
            int((band & (step == "near_dedup")).sum()), int(band.sum())
        )
    out["normal_rows_removed"] = int(((kind == NORMAL) & (step != "")).sum())
    return out


def score_baseline(labels: dict, dropped: np.ndarray) -> dict[str, float]:
    kind = np.concatenate([lab["kind"] for lab in labels.values()])
    gone = np.zeros(len(kind), bool)
    gone[dropped] = True
    out = {}
    for name, k in (("exact", EXACT), ("near", NEAR), ("decontam", CONTAM), ("length", LONG), ("format", INVALID)):
        out[f"{name}_recall"] = _ratio(int((gone & (kind == k)).sum()), int((kind == k).sum()))
    out["exact_precision"] = _ratio(int((gone & (kind == EXACT)).sum()), int(gone.sum()))
    return out


class _SpaceWords:
    """datatrove word tokenizer for the comparison: split at spaces. datatrove's English default is NLTK's, which
    needs the punkt data (a download); its `simplify_text` has already lower-cased the text, turned punctuation
    into spaces and collapsed whitespace, so on this data the words are the same."""

    def __new__(cls):
        from datatrove.utils.word_tokenizers import WordTokenizer

        class SpaceWords(WordTokenizer):
            def word_tokenize(self, text: str) -> list[str]:
                return text.split()

            def sent_tokenize(self, text: str) -> list[str]:
                return [text]

            def span_tokenize(self, text: str) -> list[tuple[int, int]]:
                return [(0, len(text))]

        return SpaceWords()


def _xxh64_text(text: str) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(text.encode("utf-8"))


def _source_chunks(data_dir: str) -> list[tuple[int, object, object, int]]:
    """(source index, opened source, chunk, global row of the chunk's first row) over the benchmark's sources."""
    from data_gen.mix import MixSource
    from data_gen.mix.readers import open_source

    out, base = [], 0
    for s, ((spec, _), (name, *_)) in enumerate(zip(_specs(Path(data_dir)), SOURCES)):
        opened = open_source(MixSource(data=spec, name=name), Path(data_dir) / "dt-work")
        for chunk in opened.chunks:
            out.append((s, opened, chunk, base))
            base += _chunk_rows(opened, chunk)
    return out


def _chunk_rows(opened, chunk) -> int:
    if opened.kind == "parquet":
        meta = pq.ParquetFile(chunk.file).metadata
        return sum(meta.row_group(g).num_rows for g in range(chunk.start, chunk.stop))
    if opened.kind == "arrow":
        with pa.memory_map(chunk.file) as source:
            return sum(b.num_rows for i, b in enumerate(pa.ipc.open_stream(source)) if chunk.start <= i < chunk.stop)
    with open(chunk.file, "rb") as f:
        f.seek(chunk.start)
        return f.read(chunk.stop - chunk.start).count(b"\n")


def _datatrove(data_dir: str, out_dir: str, workers: int, result_path: str) -> None:
    """datatrove's MinHash deduplication (signatures, LSH buckets, clusters) over every row's text, with our
    shingle size and our LSH bands x rows for THRESHOLD; 2 tasks read the rows (Arrow readers, as ours)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )

    from data_gen.mix.hashing import lsh_params
    from data_gen.mix.readers import read_chunk

    chunks = _source_chunks(data_dir)
    workers = workers or os.cpu_count() or 1
    out = Path(out_dir)

    class Rows(PipelineStep):
        name = "benchmark rows"

        def run(self, data=None, rank: int = 0, world_size: int = 1):
            from datatrove.data import Document

            ids = []
            for _, opened, chunk, base in chunks[rank::world_size]:
                for table in read_chunk(opened, chunk, None):
                    messages = table["messages"].to_pylist()
                    rows = table["row"].to_numpy() + base
                    for row, conv in zip(rows.tolist(), messages):
                        ids.append(row)
                        yield Document(text="\n".join(m["content"] or "" for m in conv), id=str(row))
            np.save(out / f"ids-{rank:05d}.npy", np.array(ids, np.int64))

    bands, rows = lsh_params(THRESHOLD, 112)
    config = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows)
    start = time.time()
    common = {"workers": workers, "start_method": "fork"}
    signature = MinhashDedupSignature(str(out / "sigs"), config=config, language=_SpaceWords())
    signature._hash_func = _xxh64_text  # datatrove 0.10.1 passes str, which xxhash >= 4 refuses
    LocalPipelineExecutor(
        [Rows(), signature],
        tasks=workers,
        logging_dir=str(out / "logs-1"),
        **common,
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=config)],
        tasks=bands,
        logging_dir=str(out / "logs-2"),
        **common,
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=config)],
        tasks=1,
        logging_dir=str(out / "logs-3"),
        **{**common, "workers": 1},
    ).run()
    wall = time.time() - start
    removed = []
    for rank in range(workers):
        ids = np.load(out / f"ids-{rank:05d}.npy")
        path = out / "remove" / f"{rank:06d}.remove"
        doc = np.fromfile(path, "<u4").astype(np.int64) if path.exists() else np.zeros(0, np.int64)
        removed.append(ids[doc])
    np.save(out / "removed.npy", np.concatenate(removed))
    Path(result_path).write_text(json.dumps({"wall_s": wall, "bands": bands, "rows": rows}))


def score_pairs(labels: dict, removed: np.ndarray) -> dict[str, float]:
    """Near-dedup quality of a set of removed global rows, the same way for every method: a planted near pair
    (copy, original) is caught when not both of them are kept; a removed row is correct when it belongs to a
    planted duplicate group (an exact or near copy, or the original of one)."""
    names = list(labels)
    offsets = np.concatenate([[0], np.cumsum([len(labels[n]["kind"]) for n in names])])
    kind = np.concatenate([labels[n]["kind"] for n in names])
    sim = np.concatenate([labels[n]["jaccard"] for n in names])
    orig = np.concatenate([labels[n]["orig"] for n in names])
    has_orig = orig[:, 0] >= 0
    orig_row = np.where(has_orig, offsets[np.maximum(orig[:, 0], 0)] + orig[:, 1], -1)
    gone = np.zeros(len(kind), bool)
    gone[removed] = True
    near = np.flatnonzero(kind == NEAR)
    caught = gone[near] | gone[orig_row[near]]
    in_group = np.zeros(len(kind), bool)
    in_group[np.flatnonzero(has_orig)] = True
    in_group[orig_row[has_orig]] = True
    out = {
        "pair_recall": _ratio(int(caught.sum()), len(near)),
        "pair_precision": _ratio(int((gone & in_group).sum()), int(gone.sum())),
        "rows_removed": int(gone.sum()),
        "normal_rows_removed": int((gone & ~in_group).sum()),
    }
    for lo, hi in ((0.0, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.0), (1.0, 1.01)):
        band = (sim[near] >= lo) & (sim[near] < hi)
        out[f"pair_recall_j[{lo:.2f},{min(hi, 1):.2f}{']' if hi > 1 else ')'}"] = _ratio(
            int(caught[band].sum()), int(band.sum())
        )
    return out


def _removed_rows(labels: dict, removed: pa.Table, steps: tuple[str, ...]) -> np.ndarray:
    """Global rows of removed.parquet removed by one of `steps`."""
    names = list(labels)
    offsets = dict(zip(names, np.concatenate([[0], np.cumsum([len(labels[n]["kind"]) for n in names])])))
    mask = np.isin(removed["step"].to_numpy(zero_copy_only=False), steps)
    src = removed["source"].to_numpy(zero_copy_only=False)[mask]
    row = removed["row"].to_numpy()[mask]
    return np.array([offsets[s] for s in src], np.int64) + row if len(row) else np.zeros(0, np.int64)


def compare_minhash(num_docs: int = 3000, num_perm: int = 112) -> dict[str, float]:
    """Microseconds per document (best of 3) for lower-case + words + 5-word shingles + a MinHash signature: ours
    (batched numpy) against rensa and datasketch when importable, and datatrove's method (per-document numpy over
    xxhash'd shingles modulo a Mersenne prime, written out here because datatrove's pipeline needs nltk)."""
    import xxhash

    from data_gen.mix.hashing import Windows, minhash, permutations, word_hashes

    rng = np.random.default_rng(1)
    docs = Vocab(rng).texts(rng, rng.integers(150, 250, size=num_docs))
    prime = np.uint64((1 << 61) - 1)
    a = np.random.RandomState(1).randint(1, prime, dtype=np.uint64, size=(1, num_perm))
    b = np.random.RandomState(2).randint(0, prime, dtype=np.uint64, size=(1, num_perm))

    def shingles(doc: str) -> list[str]:
        words = _words(doc)
        return [" ".join(words[i : i + 5]) for i in range(len(words) - 4)]

    def ours(batch: list[str]) -> None:
        hashes, groups = word_hashes(pa.array(batch))
        grams, owner = Windows(hashes, groups).of(5, whole_short=True)
        minhash(grams, owner, len(batch), permutations(num_perm))

    def datatrove_method(batch: list[str]) -> None:
        for doc in batch:
            grams = np.array([xxhash.xxh64_intdigest(g.encode()) for g in shingles(doc)], np.uint64)
            np.min((grams.reshape(-1, 1) * a + b) % prime, axis=0)

    candidates = {"ours (numpy, batched)": (ours, docs), "datatrove's method": (datatrove_method, docs)}
    try:
        from rensa import RMinHash

        def rensa(batch: list[str]) -> None:
            for doc in batch:
                m = RMinHash(num_perm=num_perm, seed=42)
                m.update(shingles(doc))
                m.digest()

        candidates["rensa"] = (rensa, docs)
    except ImportError:
        pass
    try:
        from datasketch import MinHash

        def datasketch(batch: list[str]) -> None:
            for doc in batch:
                m = MinHash(num_perm=num_perm)
                m.update_batch([g.encode() for g in shingles(doc)])
                m.digest()

        candidates["datasketch"] = (datasketch, docs[: num_docs // 5])
    except ImportError:
        pass
    out = {}
    for name, (fn, batch) in candidates.items():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            fn(batch)
            best = min(best, time.perf_counter() - start)
        out[name] = best / len(batch) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_500_000, help="synthetic rows in all (and the mix size)")
    parser.add_argument("--data-dir", default="/tmp/posttrain-mix-bench", help="where the sources are cached")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core)")
    parser.add_argument("--tokenizer", default="embedded", help="tokenizer for the token-length filter")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of build_mix and the baseline, interleaved")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--datatrove", action="store_true", help="also near dedup with datatrove's MinHash")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--compare-minhash", action="store_true", help="only time the MinHash candidates")
    args = parser.parse_args()
    if args.compare_minhash:
        for name, us in compare_minhash().items():
            print(f"{name:<24} {us:8.1f} us/doc")
        return
    data_dir = Path(args.data_dir) / f"rows-{args.rows}"
    done = data_dir / "done"
    if not done.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"generating {args.rows:,} rows in {data_dir} ...", flush=True)
        start = time.time()
        generate(data_dir, args.rows)
        print(f"  in {time.time() - start:.0f}s", flush=True)
    labels = load_labels(data_dir)
    planted = np.bincount(np.concatenate([lab["kind"] for lab in labels.values()]), minlength=6)
    print("planted: " + ", ".join(f"{KIND_NAMES[k]} {planted[k]:,}" for k in range(1, 6)), flush=True)
    sims = np.concatenate([lab["jaccard"][lab["kind"] == NEAR] for lab in labels.values()])
    quartiles = ", ".join(f"{q:.3f}" for q in np.quantile(sims, [0, 0.25, 0.5, 0.75, 1]))
    print(f"near duplicates' Jaccard similarity (5-word shingles), min/25%/50%/75%/max: {quartiles}", flush=True)
    out_dir = data_dir / "out"
    results: dict = {"rows": args.rows, "cpus": os.cpu_count(), "rounds": []}
    for r in range(args.rounds):
        shutil.rmtree(out_dir, ignore_errors=True)
        ours = _loaded(measured, _ours, str(data_dir), str(out_dir / "ours"), args.rows, args.workers, args.tokenizer)
        removed = pq.read_table(out_dir / "ours" / "removed.parquet")
        ours.update(score_ours(labels, removed))
        ours.update(score_pairs(labels, _removed_rows(labels, removed, ("exact_dedup", "near_dedup"))))
        round_ = {"ours": ours}
        if not args.skip_baseline:
            base = _loaded(measured, _baseline, str(data_dir), str(out_dir / "baseline"))
            base.update(score_baseline(labels, np.load(out_dir / "baseline" / "baseline_dropped.npy")))
            round_["baseline"] = base
            shutil.rmtree(out_dir / "baseline", ignore_errors=True)
        results["rounds"].append(round_)
        _print_round(r, round_)
    results["ours"], results["baseline"] = results["rounds"][-1]["ours"], results["rounds"][-1].get("baseline", {})
    _print(results)
    if args.datatrove:
        shutil.rmtree(out_dir, ignore_errors=True)
        near = _loaded(measured, _ours_near_only, str(data_dir), str(out_dir / "near"), args.rows, args.workers)
        near.update(
            score_pairs(
                labels, _removed_rows(labels, pq.read_table(out_dir / "near" / "removed.parquet"), ("near_dedup",))
            )
        )
        shutil.rmtree(out_dir / "near", ignore_errors=True)
        dt = _loaded(measured, _datatrove, str(data_dir), str(out_dir / "datatrove"), args.workers)
        dt.update(score_pairs(labels, np.load(out_dir / "datatrove" / "removed.npy")))
        results["near_only"], results["datatrove"] = near, dt
        _print_near(results["ours"], near, dt)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


def _loaded(fn, *args) -> dict:
    """fn(*args) with the machine's 1-minute load average before and after."""
    before = os.getloadavg()[0]
    out = fn(*args)
    out.update(load_before=before, load_after=os.getloadavg()[0])
    return out


def _print_round(r: int, round_: dict) -> None:
    ours, base = round_["ours"], round_.get("baseline")

    def one(d: dict) -> str:
        return (
            f"{d['wall_s']:.1f} s, {d['cpu_s']:.0f} CPU s, {d['peak_rss_gib']:.2f} GiB (load {d['load_before']:.1f})"
        )

    line = f"round {r}: build_mix {one(ours)}"
    if base:
        line += f"; baseline {one(base)}; wall ratio {ours['wall_s'] / base['wall_s']:.2f}x"
        line += f", CPU ratio {ours['cpu_s'] / base['cpu_s']:.2f}x"
    print(line, flush=True)


def _print_near(ours: dict, near: dict, dt: dict) -> None:
    keys = ["wall_s", "cpu_s", "peak_rss_gib", "rows_removed", "pair_recall", "pair_precision", "normal_rows_removed"]
    keys += [k for k in dt if k.startswith("pair_recall_j")]
    from data_gen.mix.build import LSH_RECALL
    from data_gen.mix.hashing import lsh_params, verify_cutoff

    bands, rows = lsh_params(THRESHOLD, 112, LSH_RECALL)
    print(
        f"\nnear dedup at Jaccard {THRESHOLD}, 5-word shingles, 112 permutations: build_mix LSH {bands} bands x {rows} "
        f"rows, candidates checked at {verify_cutoff(THRESHOLD, bands * rows):.3f}; datatrove LSH {dt['bands']} "
        f"bands x {dt['rows']} rows (P(candidate) >= 0.95 at the threshold), no check"
    )
    print(f"| {'metric':<26} | {'build_mix (all steps)':>21} | {'build_mix (near only)':>21} | {'datatrove':>10} |")
    print(f"|{'-' * 28}|{'-' * 23}|{'-' * 23}|{'-' * 12}|")
    for key in keys:
        values = [_fmt(d.get(key, float("nan"))) for d in (ours, near, dt)]
        print(f"| {key:<26} | {values[0]:>21} | {values[1]:>21} | {values[2]:>10} |")


def _print(results: dict) -> None:
    ours, base = results["ours"], results.get("baseline", {})
    keys = [
        "wall_s",
        "cpu_s",
        "peak_rss_gib",
        "num_rows",
        "exact_recall",
        "exact_precision",
        "near_recall",
        "near_precision",
        "decontam_recall",
        "decontam_precision",
        "length_recall",
        "format_recall",
    ]
    keys += [k for k in ours if k.startswith("near_recall_j") or k in ("near_removed_any_step", "normal_rows_removed")]
    print(f"\n{results['rows']:,} rows, {results['cpus']} CPUs (last round)")
    print(f"| {'metric':<26} | {'build_mix':>12} | {'naive baseline':>14} |")
    print(f"|{'-' * 28}|{'-' * 14}|{'-' * 16}|")
    for key in keys:
        a, b = ours.get(key, float("nan")), base.get(key, float("nan"))
        print(f"| {key:<26} | {_fmt(a):>12} | {_fmt(b):>14} |")


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value != value else f"{value:.4f}" if value < 10 else f"{value:,.1f}"


if __name__ == "__main__":
    main()
