"""The pool: every input row's verdicts after the scan, then decontamination, exact dedup and near dedup.

Rows are numbered in a fixed global order (sources as listed, then their chunks and rows), and dedup keeps the
first occurrence: a row listed earlier wins. In memory the pool keeps one byte per row (the step that removed it)
and, for the rows removed as duplicates only, the row kept instead; everything else (hashes, domains, token
counts, eval items) stays in the scan's chunk files and is read back one chunk at a time when a step or a report
needs it. Finding the first occurrence of every key sorts one 64-bit word per row (the key's top bits and the
row's rank, np.sort's vectorised path, many times faster than an argsort); above `partition_rows` rows it splits
the keys by value into several passes, so the working memory stays bounded whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_gen.mix.hashing import b_bit_jaccard
from data_gen.mix.scan import bands_path, chunk_path, load_chunk, sig_path

# Per-row checks first, then the checks across rows: a contaminated row is counted as contaminated even when it
# also has duplicates, and dedup compares only rows that may enter the mix.
STEPS = ["input", "chat_format", "token_length", "decontaminate", "exact_dedup", "near_dedup"]
CONTAM, EXACT, NEAR = 3, 4, 5
PARTITION_ROWS = 8_000_000


@dataclass
class ChunkInfo:
    source: int
    index: int
    path: Path
    start: int  # first global row
    num_rows: int  # rows in the pool (after the domain filter)
    row_offset: int  # rows of the source before this chunk (before the domain filter)

    @property
    def stop(self) -> int:
        return self.start + self.num_rows


@dataclass
class Pool:
    """What the steps decided for every pooled row, in global order, and where each chunk's rows are."""

    source_names: list[str]
    domain_names: list[str]
    chunks: list[ChunkInfo]
    domain_codes: list[np.ndarray]  # per chunk: its domain codes -> index into domain_names
    removed_at: np.ndarray  # uint8 per row: 0 kept, else index into STEPS
    dup_rows: np.ndarray  # int64, increasing: rows removed as exact or near duplicates
    dup_of: np.ndarray  # int64: the row kept instead of each of dup_rows

    def __len__(self) -> int:
        return len(self.removed_at)

    def source_range(self, source: int) -> tuple[int, int]:
        """[start, stop) of a source's rows (its chunks are consecutive)."""
        mine = [c for c in self.chunks if c.source == source]
        return (mine[0].start, mine[-1].stop) if mine else (0, 0)

    def chunk_arrays(self, chunk: int, *keys: str) -> list[np.ndarray]:
        """Arrays of one chunk's scan file; `domain` comes as an index into domain_names."""
        data = load_chunk(self.chunks[chunk].path, keys)
        if "domain" in keys and self.chunks[chunk].num_rows:
            data["domain"] = self.domain_codes[chunk][data["domain"]]
        return [data[k] for k in keys]


def load_pool(source_names: list[str], out_dirs: list[Path], num_chunks: list[int]) -> Pool:
    """The status of every scanned row, and the chunk table."""
    chunks, statuses, codes, domain_names = [], [], [], []
    start = 0
    for s, (out_dir, count) in enumerate(zip(out_dirs, num_chunks)):
        row_offset = 0
        for i in range(count):
            path = chunk_path(out_dir, i)
            data = load_chunk(path, ("status", "domain_names", "num_read"))
            n = len(data["status"])
            codes.append(np.array([_code(domain_names, str(d)) for d in data["domain_names"]], np.int32))
            statuses.append(data["status"].astype(np.uint8))
            chunks.append(ChunkInfo(s, i, path, start, n, row_offset))
            start += n
            row_offset += int(data["num_read"])
    removed = np.concatenate(statuses) if statuses else np.zeros(0, np.uint8)
    return Pool(source_names, domain_names, chunks, codes, removed, np.zeros(0, np.int64), np.zeros(0, np.int64))


def _code(names: list[str], name: str) -> int:
    if name not in names:
        names.append(name)
    return names.index(name)


def first_occurrences(
    parts: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], num_rows: int, partition_rows: int = PARTITION_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose key an earlier row already has.

    Args:
        parts: called once per pass; yields (keys uint64, global rows int64) with rows increasing.
        num_rows: how many rows `parts` yields in all (sets the number of passes).
        partition_rows: most rows sorted at once.
    Returns:
        (duplicate rows, the first row with the same key), both int64, by increasing duplicate row.
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
        d, f = _first_occurrences(keys)
        dups.append(rows[d])
        firsts.append(rows[f])
    dup, first = np.concatenate(dups), np.concatenate(firsts)
    order = np.argsort(dup)
    return dup[order], first[order]


def _first_occurrences(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of keys seen at an earlier position, that earlier position): one np.sort of rank-tagged keys.

    Each key's low bits are replaced by its position, so that sorting orders by (top bits of the key, position).
    Runs of equal top bits whose full keys all agree resolve at once (first position of the run); the rare runs
    where two different keys share their top bits are resolved exactly with an argsort of those few rows."""
    n = len(keys)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bits = max(1, int(n - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    tagged = (keys & ~low) | np.arange(n, dtype=np.uint64)
    tagged.sort()
    pos = (tagged & low).astype(np.int64)
    high = tagged & ~low
    full = keys[pos]
    same_high = high[1:] == high[:-1]
    if not same_high.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    same_full = full[1:] == full[:-1]
    run_start = np.concatenate([[True], ~same_high])
    run_id = np.cumsum(run_start) - 1
    mixed_runs = np.unique(run_id[1:][same_high & ~same_full])  # runs holding two different keys (rare)
    dup_mask = np.concatenate([[False], same_high])
    if len(mixed_runs):
        dup_mask &= ~np.isin(run_id, mixed_runs)
    first_pos = pos[np.flatnonzero(run_start)]
    d, f = pos[dup_mask], first_pos[run_id[dup_mask]]
    if len(mixed_runs):
        idx = np.flatnonzero(np.isin(run_id, mixed_runs))
        sub_pos, sub_keys = pos[idx], full[idx]
        order = np.lexsort((sub_pos, sub_keys))
        sub_pos, sub_keys = sub_pos[order], sub_keys[order]
        new = np.concatenate([[True], sub_keys[1:] != sub_keys[:-1]])
        starts = np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))
        d = np.concatenate([d, sub_pos[~new]])
        f = np.concatenate([f, sub_pos[starts[~new]]])
    return d, f


def _alive_parts(chunks: list[ChunkInfo], alive: np.ndarray, key: Callable[[int, np.ndarray], np.ndarray]):
    """parts() for first_occurrences: per chunk with alive rows, (key of those rows, their global rows)."""

    def parts() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i, c in enumerate(chunks):
            mine = alive[c.start : c.stop]
            if mine.any():
                yield key(i, mine), c.start + np.flatnonzero(mine)

    return parts


def _mark(pool: Pool, dups: np.ndarray, firsts: np.ndarray, step: int) -> None:
    pool.removed_at[dups] = step
    rows, of = np.concatenate([pool.dup_rows, dups]), np.concatenate([pool.dup_of, firsts])
    order = np.argsort(rows, kind="stable")
    pool.dup_rows, pool.dup_of = rows[order], of[order]


def dedup_exact(pool: Pool, partition_rows: int = PARTITION_ROWS) -> None:
    """Mark rows whose normalised text repeats an earlier surviving row (step exact_dedup)."""
    alive = pool.removed_at == 0
    parts = _alive_parts(pool.chunks, alive, lambda i, mine: pool.chunk_arrays(i, "exact")[0][mine])
    dups, firsts = first_occurrences(parts, int(alive.sum()), partition_rows)
    _mark(pool, dups, firsts, EXACT)


def dedup_near(
    pool: Pool,
    bands: int,
    verify_at: float | None = None,
    partition_rows: int = PARTITION_ROWS,
    workers: Any = None,
) -> None:
    """Mark rows sharing an LSH band with an earlier surviving row whose signature agrees with theirs on at least
    `verify_at` (estimated Jaccard; None: no check) (step near_dedup).

    Every band is one pass over the band hashes on disk, on `workers` (`workers.Workers`, the bands spread over
    them) or here. The set of rows compared is fixed before the first band, so the result does not depend on the
    order of the bands; a chain A~B~C removes B and C.
    """
    alive = pool.removed_at == 0
    for i, c in enumerate(pool.chunks):
        if c.num_rows and alive[c.start : c.stop].any():
            alive[c.start : c.stop] &= pool.chunk_arrays(i, "has_shingles")[0]
    packed = np.packbits(alive)  # 1 bit per row to each task
    tasks = [(pool.chunks, packed, len(alive), band, partition_rows) for band in range(bands)]
    found = workers.map(_band_duplicates, tasks) if workers is not None else [_band_duplicates(*t) for t in tasks]
    rows = np.concatenate([r for r, _ in found]) if found else np.zeros(0, np.int64)
    of = np.concatenate([f for _, f in found]) if found else np.zeros(0, np.int64)
    if verify_at is not None and len(rows):
        pairs, back = np.unique(np.stack([rows, of], axis=1), axis=0, return_inverse=True)
        ok = b_bit_jaccard(_signatures(pool, pairs[:, 0]), _signatures(pool, pairs[:, 1])) >= verify_at
        keep = ok[back.reshape(-1)]
        rows, of = rows[keep], of[keep]
    order = np.argsort(rows, kind="stable")  # the first band that found a row names its counterpart
    rows, of = rows[order], of[order]
    first = np.concatenate([[True], rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, bool)
    _mark(pool, rows[first], of[first], NEAR)


def _band_duplicates(
    chunks: list[ChunkInfo], packed: np.ndarray, num_rows: int, band: int, partition_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """first_occurrences of one LSH band's hashes over the alive rows (`packed`: np.packbits of the mask)."""
    alive = np.unpackbits(packed, count=num_rows).astype(bool)

    def key(i: int, mine: np.ndarray) -> np.ndarray:
        return np.asarray(np.load(bands_path(chunks[i].path), mmap_mode="r")[band][mine])

    return first_occurrences(_alive_parts(chunks, alive, key), int(alive.sum()), partition_rows)


def _signatures(pool: Pool, rows: np.ndarray, batch: int = 1 << 20) -> np.ndarray:
    """The stored signature bytes (uint8 [len(rows), K]) of global rows, read chunk by chunk (memory-mapped)."""
    starts = np.array([c.start for c in pool.chunks], np.int64)
    chunk = np.searchsorted(starts, rows, side="right") - 1
    out = None
    for i in np.unique(chunk):
        c, mine = pool.chunks[i], np.flatnonzero(chunk == i)
        sig = np.load(sig_path(c.path), mmap_mode="r")
        if out is None:
            out = np.zeros((len(rows), sig.shape[1]), np.uint8)
        out[mine] = sig[rows[mine] - c.start]
    return out if out is not None else np.zeros((0, 0), np.uint8)


def decontaminate(pool: Pool) -> None:
    """Mark surviving rows that share an n-gram with an eval item (step decontaminate)."""
    for i, c in enumerate(pool.chunks):
        if c.num_rows:
            (contam,) = pool.chunk_arrays(i, "contam")
            part = pool.removed_at[c.start : c.stop]
            part[(part == 0) & (contam >= 0)] = CONTAM


def remaining(pool: Pool, by: str, copies: np.ndarray | None = None) -> dict[str, dict[str, int]]:
    """{name: {step: rows left after the step}} grouped by 'source' or 'domain' (and 'output' with `copies`)."""
    names = pool.source_names if by == "source" else pool.domain_names
    counts = np.zeros((len(names), len(STEPS)), np.int64)
    output = np.zeros(len(names), np.int64)
    for i, c in enumerate(pool.chunks):
        if not c.num_rows:
            continue
        removed = pool.removed_at[c.start : c.stop]
        if by == "source":
            counts[c.source] += np.bincount(removed, minlength=len(STEPS))
            if copies is not None:
                output[c.source] += int(copies[c.start : c.stop].sum())
        else:
            (domain,) = pool.chunk_arrays(i, "domain")
            counts += np.bincount(domain * len(STEPS) + removed, minlength=len(names) * len(STEPS)).reshape(
                len(names), len(STEPS)
            )
            if copies is not None:
                output += np.bincount(domain, weights=copies[c.start : c.stop], minlength=len(names)).astype(np.int64)
    out = {}
    for g, name in enumerate(names):
        total = int(counts[g].sum())
        left = total - np.cumsum(counts[g][1:])
        out[name] = {"input": total, **{step: int(v) for step, v in zip(STEPS[1:], left)}}
        if copies is not None:
            out[name]["output"] = int(output[g])
    return out
