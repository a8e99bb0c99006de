"""The pool: every input row's verdicts after the scan, then decontamination, exact dedup and near dedup.

Rows are numbered in a fixed global order (sources as listed, then their chunks and rows), and dedup keeps the
first occurrence: a row listed earlier wins. Per row the pool keeps about 30 bytes (source, row, domain, step that
removed it, duplicate-of, eval item...); hashes stay on disk and are read one band at a time. Finding the first
occurrence of every key sorts (key, row) pairs; above `partition_rows` rows it splits the keys by value into
several passes, so memory stays bounded whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_gen.mix.scan import bands_path, chunk_path, load_chunk

# Per-row checks first, then the checks across rows: a contaminated row is counted as contaminated even when it
# also has duplicates, and dedup compares only rows that may enter the mix.
STEPS = ["input", "chat_format", "token_length", "decontaminate", "exact_dedup", "near_dedup"]
CONTAM, EXACT, NEAR = 3, 4, 5


@dataclass
class ChunkInfo:
    source: int
    index: int
    path: Path
    start: int  # first global row
    num_rows: int  # rows in the pool (after the domain filter)
    row_offset: int  # rows of the source before this chunk (before the domain filter)


@dataclass
class Pool:
    """Per-row arrays over all pooled rows, in global order."""

    source_names: list[str]
    domain_names: list[str]
    chunks: list[ChunkInfo]
    source: np.ndarray  # int32
    row: np.ndarray  # int64, row number inside its source
    domain: np.ndarray  # int32 into domain_names
    removed_at: np.ndarray  # uint8: 0 kept, else index into STEPS
    reason: np.ndarray  # uint8 chat-format reason
    num_tokens: np.ndarray  # int32, -1 when not counted
    num_bytes: np.ndarray  # int64, content bytes
    contam: np.ndarray  # int32 eval item, -1 none
    has_shingles: np.ndarray  # bool
    dup_of: np.ndarray = field(default=None)  # int64 global row kept instead, -1 none

    def __len__(self) -> int:
        return len(self.source)


def load_pool(source_names: list[str], out_dirs: list[Path], num_chunks: list[int]) -> Pool:
    """Concatenate the small arrays of every scanned chunk."""
    chunks, columns, domain_names = [], {}, []
    start = 0
    for s, (out_dir, count) in enumerate(zip(out_dirs, num_chunks)):
        row_offset = 0
        for i in range(count):
            path = chunk_path(out_dir, i)
            data = load_chunk(path)
            n = len(data["row"])
            codes = np.array([_code(domain_names, str(d)) for d in data["domain_names"]], np.int32)
            values = {
                "source": np.full(n, s, np.int32),
                "row": data["row"].astype(np.int64) + row_offset,
                "domain": codes[data["domain"]] if n else np.zeros(0, np.int32),
                "removed_at": data["status"].astype(np.uint8),
                "reason": data["reason"].astype(np.uint8),
                "num_tokens": data["num_tokens"].astype(np.int32),
                "num_bytes": data["num_bytes"].astype(np.int64),
                "contam": data["contam"].astype(np.int32),
                "has_shingles": data["has_shingles"].astype(bool) if len(data["has_shingles"]) else np.zeros(n, bool),
            }
            for key, value in values.items():
                columns.setdefault(key, []).append(value)
            chunks.append(ChunkInfo(s, i, path, start, n, row_offset))
            start += n
            row_offset += int(data["num_read"])
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    pool = Pool(source_names, domain_names, chunks, **arrays)
    pool.dup_of = np.full(len(pool), -1, np.int64)
    return pool


def _code(names: list[str], name: str) -> int:
    if name not in names:
        names.append(name)
    return names.index(name)


def first_occurrences(
    parts: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], num_rows: int, partition_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose key an earlier row already has.

    Args:
        parts: called once per pass; yields (keys uint64, global rows int64) with rows increasing.
        num_rows: how many rows `parts` yields in all (sets the number of passes).
        partition_rows: most rows sorted at once.
    Returns:
        (duplicate rows, the first row with the same key), both int64.
    """
    num_passes = max(1, -(-num_rows // partition_rows))
    dups, firsts = [], []
    for p in range(num_passes):
        keys_list, rows_list = [], []
        for keys, rows in parts():
            if num_passes > 1:
                mine = keys % np.uint64(num_passes) == p
                keys, rows = keys[mine], rows[mine]
            keys_list.append(keys)
            rows_list.append(rows)
        keys = np.concatenate(keys_list) if keys_list else np.zeros(0, np.uint64)
        rows = np.concatenate(rows_list) if rows_list else np.zeros(0, np.int64)
        order = np.argsort(keys, kind="stable")
        keys, rows = keys[order], rows[order]
        new = np.ones(len(keys), bool)
        new[1:] = keys[1:] != keys[:-1]
        group_start = np.maximum.accumulate(np.where(new, np.arange(len(keys)), 0))
        dups.append(rows[~new])
        firsts.append(rows[group_start[~new]])
    return np.concatenate(dups), np.concatenate(firsts)


def dedup_exact(pool: Pool, partition_rows: int = 20_000_000) -> None:
    """Mark rows whose normalised text repeats an earlier surviving row (step exact_dedup)."""

    def parts() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for c in pool.chunks:
            alive = pool.removed_at[c.start : c.start + c.num_rows] == 0
            if alive.any():
                yield load_chunk(c.path)["exact"][alive], c.start + np.flatnonzero(alive)

    num_alive = int((pool.removed_at == 0).sum())
    dups, firsts = first_occurrences(parts, num_alive, partition_rows)
    pool.removed_at[dups] = EXACT
    pool.dup_of[dups] = firsts


def dedup_near(pool: Pool, bands: int, partition_rows: int = 20_000_000) -> None:
    """Mark rows sharing an LSH band with an earlier surviving row (step near_dedup).

    Every band is one pass over the band hashes on disk. The set of rows compared is fixed before the first band,
    so the result does not depend on the order of the bands; a chain A~B~C removes B and C.
    """
    alive = (pool.removed_at == 0) & pool.has_shingles
    flagged = np.full(len(pool), -1, np.int64)
    for band in range(bands):

        def parts(band: int = band) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for c in pool.chunks:
                mine = alive[c.start : c.start + c.num_rows]
                if mine.any():
                    column = np.load(bands_path(c.path), mmap_mode="r")[band]
                    yield np.asarray(column[mine]), c.start + np.flatnonzero(mine)

        dups, firsts = first_occurrences(parts, int(alive.sum()), partition_rows)
        fresh = flagged[dups] < 0
        flagged[dups[fresh]] = firsts[fresh]
    near = flagged >= 0
    pool.removed_at[near] = NEAR
    pool.dup_of[near] = flagged[near]


def decontaminate(pool: Pool) -> None:
    """Mark surviving rows that share an n-gram with an eval item (step decontaminate)."""
    pool.removed_at[(pool.removed_at == 0) & (pool.contam >= 0)] = CONTAM


def remaining(pool: Pool, by: str) -> dict[str, dict[str, int]]:
    """{name: {step: rows left after the step}} grouped by 'source' or 'domain'."""
    names = pool.source_names if by == "source" else pool.domain_names
    group = pool.source if by == "source" else pool.domain
    out = {}
    for g, name in enumerate(names):
        removed = pool.removed_at[group == g]
        counts = np.bincount(removed, minlength=len(STEPS))
        left = len(removed) - np.cumsum(counts[1:])
        out[name] = {"input": len(removed), **{step: int(v) for step, v in zip(STEPS[1:], left)}}
    return out
