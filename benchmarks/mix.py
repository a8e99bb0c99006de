"""Benchmark of the SFT mix builder at DeepSeek-V3's scale: 1.5M synthetic chat examples, every step enabled.

It generates five sources (Parquet, Parquet with a domain column, JSONL, a `save_to_disk` folder, and Parquet in
prompt/completion form) with planted items, all counted: exact duplicates (half of them differing only in case and
whitespace, a fifth across sources), near duplicates (one or two words changed or inserted, or punctuation
changed; their true 5-word-shingle Jaccard similarity is measured), conversations containing HumanEval problems or
held-out reasoning-gym `gsm_symbolic` questions, over-long conversations and malformed ones. Then it builds the
1.5M mix with `build_mix` (chat format, token length with the embedded model's tokenizer, exact and near dedup,
decontamination, weighted sampling, shuffled shards) in a child process while sampling the RSS of its whole process
tree, and does the same for a naive baseline: `datasets` load + `concatenate_datasets` + pandas
`drop_duplicates` on the conversation text (exact only, no normalisation). It reports wall time, peak RSS, and
recall and precision on the planted items for both.

    python benchmarks/mix.py                      # 1.5M rows; the data is cached in --data-dir
    python benchmarks/mix.py --rows 100000 --skip-baseline

Targets on a 2-core machine: <= 10 min, <= 4 GiB, exact recall 1.0, near recall >= 0.95, decontamination 1.0.
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

            datasets.Dataset(pa.concat_tables(self.batches)).save_to_disk(str(self.path))


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
    from data_gen.mix import Decontam, Dedup, MixSource, build_mix
    from data_gen.sources import SourceConfig

    sources = [
        MixSource(data=spec, name=name, weight=share, domain=None if fmt == "parquet-domain" else domain)
        for (spec, fmt), (name, _, share, domain, *_) in zip(_specs(Path(data_dir)), SOURCES)
    ]
    start = time.time()
    result = build_mix(
        sources,
        Path(out_dir) / "dataset",
        size=num_rows,
        seed=0,
        dedup=Dedup(near_threshold=0.85),
        decontaminate=Decontam(against=[SourceConfig(source="humaneval"), SourceConfig(**GSM)]),
        tokenizer=tokenizer,
        max_tokens=4096,
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
    """Run `target(*args, result_path)` in a fresh process; return its result plus the peak RSS of its tree."""
    import psutil

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
    out = json.loads(result_path.read_text())
    out.update(peak_rss_gib=peak[0] / 2**30, process_s=time.time() - start)
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
    parser.add_argument("--workers", type=int, default=0, help="scan processes (0: one per core)")
    parser.add_argument("--tokenizer", default="embedded", help="tokenizer for the token-length filter")
    parser.add_argument("--skip-baseline", action="store_true")
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
    shutil.rmtree(out_dir, ignore_errors=True)
    ours = measured(_ours, str(data_dir), str(out_dir / "ours"), args.rows, args.workers, args.tokenizer)
    ours.update(score_ours(labels, pq.read_table(out_dir / "ours" / "removed.parquet")))
    results = {"rows": args.rows, "cpus": os.cpu_count(), "ours": ours}
    if not args.skip_baseline:
        base = measured(_baseline, str(data_dir), str(out_dir / "baseline"))
        base.update(score_baseline(labels, np.load(out_dir / "baseline" / "baseline_dropped.npy")))
        results["baseline"] = base
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


def _print(results: dict) -> None:
    ours, base = results["ours"], results.get("baseline", {})
    keys = [
        "wall_s",
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
    print(f"\n{results['rows']:,} rows, {results['cpus']} CPUs")
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
