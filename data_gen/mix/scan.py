"""The scan pass: every chunk of every source is read once and reduced to small per-row arrays.

For each row: the chat-format reason, the token count and length verdict, the exact-dedup hash, the LSH band
hashes and the eval item it shares an n-gram with. A chunk's arrays go to `chunk-NNNNN.npz` (band hashes to a
`.bands.npy` beside it, transposed so that one band reads contiguously, and the low byte of every MinHash value
to a `.sig.npy`, one row per conversation, for checking candidate pairs), written to a temporary name and renamed:
a file with the final name is complete, so an interrupted scan resumes at the first missing chunk. Chunks run on
the build's worker processes (`workers.Workers`); the text never leaves the worker, only a few dozen bytes per row
reach the disk.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_gen.mix.decontam import EvalIndex
from data_gen.mix.hashing import TextBuffer, Windows, band_hashes, exact_hashes, minhash, permutations, word_hashes
from data_gen.mix.quality import TokenLength, validate_chat
from data_gen.mix.readers import SourceFiles, read_chunk

STATUS_OK, STATUS_FORMAT, STATUS_LENGTH = 0, 1, 2


@dataclass
class ScanSettings:
    """Everything a worker needs, pickled once per worker."""

    sources: list[SourceFiles]
    domains: list[str | None]
    keep_domains: list[list[str] | None]
    out_dirs: list[Path]
    exact: bool
    bands: int
    rows: int
    shingle_size: int
    num_perm: int
    tokenizer: Any
    max_tokens: int | None
    eval_index: EvalIndex | None
    batch_rows: int = 4096
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # a worker sets up once per settings


_WORKER: dict[str, Any] = {}


def chunk_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"chunk-{index:05d}.npz"


def _init(settings: ScanSettings) -> None:
    if _WORKER.get("token") == settings.token:
        return
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _WORKER.clear()
    _WORKER["token"] = settings.token
    _WORKER["settings"] = settings
    a, b = permutations(settings.num_perm)
    used = settings.bands * settings.rows  # the LSH bands read only these
    _WORKER["perms"] = (a[:used], b[:used])
    if settings.max_tokens is not None:
        _WORKER["length"] = TokenLength(settings.tokenizer, settings.max_tokens)


def _scan_task(settings: ScanSettings, source: int, index: int) -> tuple[int, int]:
    _init(settings)
    src = settings.sources[source]
    parts, num_read = [], 0
    for table in read_chunk(src, src.chunks[index], settings.domains[source], settings.batch_rows):
        num_read += table.num_rows
        keep = settings.keep_domains[source]
        if keep is not None:
            table = table.filter(pc.is_in(table["domain"], pa.array(keep, pa.string())))
        if table.num_rows:
            parts.append(scan_batch(table, settings))
    _save(chunk_path(settings.out_dirs[source], index), parts, num_read, settings.bands)
    return source, index


def scan_batch(table: pa.Table, settings: ScanSettings) -> dict[str, np.ndarray]:
    """Per-row arrays of one normalised batch (see the module docstring)."""
    messages = table["messages"].combine_chunks()
    offsets = messages.offsets.to_numpy().astype(np.int64)
    conv_offsets = offsets - offsets[0]
    roles, contents = messages.flatten().flatten()
    n = table.num_rows
    num_msgs = np.diff(conv_offsets)
    reason = validate_chat(roles, contents, conv_offsets)
    msg_bytes = np.concatenate([[0], np.cumsum(pc.fill_null(pc.binary_length(contents), 0).to_numpy())])
    content_bytes = msg_bytes[conv_offsets[1:]] - msg_bytes[conv_offsets[:-1]]
    status = np.where(reason > 0, STATUS_FORMAT, STATUS_OK).astype(np.uint8)
    text = TextBuffer(contents) if settings.exact or settings.bands or settings.eval_index is not None else None
    num_tokens = np.full(n, -1, np.int32)
    if "length" in _WORKER:
        valid = np.flatnonzero(reason == 0)
        counts, too_long = _WORKER["length"].check(messages, content_bytes, num_msgs, valid)
        num_tokens[valid] = counts
        status[valid[too_long]] = STATUS_LENGTH
    out = {
        "row": table["row"].to_numpy(),
        "status": status,
        "reason": reason,
        "num_tokens": num_tokens,
        "num_bytes": content_bytes,
        "domain": table["domain"].combine_chunks(),
        "exact": exact_hashes(roles, contents, conv_offsets, text) if settings.exact else np.zeros(n, np.uint64),
    }
    system = pc.fill_null(pc.equal(roles, "system"), False).to_numpy(zero_copy_only=False) if settings.bands else None
    out.update(_word_features(contents, text, num_msgs, n, settings, system))
    return out


def _word_features(
    contents: pa.Array, text: Any, num_msgs: np.ndarray, n: int, settings: ScanSettings, system: np.ndarray | None
) -> dict:
    out: dict[str, np.ndarray] = {"contam": np.full(n, -1, np.int32)}
    if settings.bands:
        out["bands"] = np.zeros((n, settings.bands), np.uint64)
        out["sig8"] = np.zeros((n, settings.bands * settings.rows), np.uint8)
        out["has_shingles"] = np.zeros(n, bool)
    if not settings.bands and settings.eval_index is None:
        return out
    hashes, msg = word_hashes(contents, text)
    conv = np.repeat(np.arange(n), num_msgs)[msg]
    windows = Windows(hashes, conv)
    if settings.bands:
        # Near dedup looks at the user and assistant turns only: one long system prompt shared by every row of a
        # source (an R1 system prompt) made short, different problems look like near copies of each other.
        talk = ~system[msg]
        content = windows if talk.all() else Windows(hashes[talk], conv[talk])
        shingles, owner = content.of(settings.shingle_size, whole_short=True)
        sig = minhash(shingles, owner, n, _WORKER["perms"])
        out["bands"] = band_hashes(sig, settings.bands, settings.rows)
        out["sig8"] = sig.astype(np.uint8)  # the low byte: b-bit MinHash, for the check of candidate pairs
        out["has_shingles"] = np.bincount(owner, minlength=n) > 0
    if settings.eval_index is not None:
        out["contam"] = settings.eval_index.match(windows, n)
    return out


def _save(path: Path, parts: list[dict[str, np.ndarray]], num_read: int, bands: int) -> None:
    """Write a chunk's arrays: bands first, then the .npz whose presence marks the chunk complete."""
    keys = ["row", "status", "reason", "num_tokens", "num_bytes", "exact", "contam", "has_shingles"]
    merged = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in keys if k != "has_shingles"}
    merged["has_shingles"] = (
        np.concatenate([p["has_shingles"] for p in parts]) if parts and bands else np.zeros(0, bool)
    )
    domains = pc.dictionary_encode(pa.chunked_array([p["domain"] for p in parts], pa.string()).combine_chunks())
    names = np.array(domains.dictionary.to_pylist(), str) if len(domains.dictionary) else np.zeros(0, str)
    codes = domains.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    merged.update(domain=codes, domain_names=names, num_read=np.array(num_read))
    if bands:
        band_arr = np.concatenate([p["bands"] for p in parts]).T.copy() if parts else np.zeros((bands, 0), np.uint64)
        tmp = path.with_suffix(".bands.tmp.npy")
        np.save(tmp, band_arr)
        os.replace(tmp, bands_path(path))
        sig = np.concatenate([p["sig8"] for p in parts]) if parts else np.zeros((0, 0), np.uint8)
        tmp = path.with_suffix(".sig.tmp.npy")
        np.save(tmp, sig)
        os.replace(tmp, sig_path(path))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **merged)
    os.replace(tmp, path)


def bands_path(path: Path) -> Path:
    return path.with_suffix(".bands.npy")


def sig_path(path: Path) -> Path:
    return path.with_suffix(".sig.npy")


def run_scan(settings: ScanSettings, workers: Any, progress: Any = None) -> None:
    """Scan every chunk without a complete result file on `workers` (`workers.Workers`); `progress(n)` is called
    as chunks finish."""
    todo = []
    for s, src in enumerate(settings.sources):
        settings.out_dirs[s].mkdir(parents=True, exist_ok=True)
        for tmp in settings.out_dirs[s].glob("*.tmp*"):
            tmp.unlink()  # half-written by an interrupted run
        todo += [(settings, s, i) for i in range(len(src.chunks)) if not chunk_path(settings.out_dirs[s], i).exists()]
    if progress:
        progress(sum(len(src.chunks) for src in settings.sources) - len(todo))
    chunks = [(s, settings.sources[s].chunks[i]) for _, s, i in todo]
    workers.map(_scan_task, [todo[k] for k in largest_first(chunks)], progress)


def largest_first(chunks: list[tuple[Any, Any]]) -> list[int]:
    """Order of (source, chunk) pairs with the largest chunks first, each chunk's span (row groups, bytes or
    batches) against the largest of its source's: a source's last chunk is often small, and small ones at the end
    of a pass keep every worker busy to its end. Ties keep their order."""
    largest: dict[Any, int] = {}
    for s, c in chunks:
        largest[s] = max(largest.get(s, 1), c.stop - c.start)
    return sorted(range(len(chunks)), key=lambda k: -(chunks[k][1].stop - chunks[k][1].start) / largest[chunks[k][0]])


def load_chunk(path: Path, keys: Any = None) -> dict[str, np.ndarray]:
    """The arrays of a chunk's scan file (only `keys`, when given)."""
    with np.load(path) as data:
        return {k: data[k] for k in (keys or data.files)}
