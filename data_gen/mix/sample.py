"""Weighted sampling of the surviving rows into the mix, with upsampling, and the shuffled output order.

Targets: a source with `count` gets exactly that many rows; the rest of `size` is split between the other sources
in proportion to their `weight` (1.0 when unset), rounded by largest remainder so that the targets add up to
`size` exactly. Without a `size`, every source gives `count` rows or all its surviving rows once.

A source with at least its target of surviving rows gives a uniform sample without replacement. One with fewer is
upsampled: every row `target // available` times, plus a uniform sample of `target % available` rows once more.
The repeat number of every copy is kept (column `repeat`). Each source draws from its own generator seeded by
(seed, source name), so adding a source does not change what the others draw.

The output order is a seeded pseudo-random permutation of the copies (`positions`): a 6-round Feistel network
over the next even power of two (at least 2**8), walked until it lands below the number of copies. Any range of copies gets its
positions on its own, so neither the parent nor a writer ever holds the whole permutation.
"""

from __future__ import annotations

import zlib

import numpy as np

from data_gen.mix.options import MixSource
from posttrain.errors import DataError


def targets(sources: list[MixSource], available: list[int], size: int | None) -> list[int]:
    """Rows each source contributes. Raises DataError when a source has no surviving rows but must give some."""
    if size is None:
        out = [s.count if s.count is not None else a for s, a in zip(sources, available)]
    else:
        rest = size - sum(s.count for s in sources if s.count is not None)
        weights = np.array([0.0 if s.count is not None else (s.weight or 1.0) for s in sources])
        out = [s.count or 0 for s in sources]
        if weights.sum() > 0:
            exact = rest * weights / weights.sum()
            shares = np.floor(exact).astype(np.int64)
            order = np.argsort(-(exact - shares), kind="stable")
            shares[order[: rest - int(shares.sum())]] += 1
            out = [o + int(x) for o, x in zip(out, shares)]
    for src, want, have in zip(sources, out, available):
        if want > 0 and have == 0:
            raise DataError(
                f"source '{src.label()}': no rows left after the quality steps, but the mix needs {want}; "
                "check its format in removed.parquet, or drop the source"
            )
    return out


def source_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def draw(available: int, target: int, rng: np.random.Generator) -> np.ndarray:
    """Copies of each of `available` rows (uint32 [available]) adding up to `target`."""
    copies = np.full(available, target // available if available else 0, np.uint32)
    extra = target % available if available else 0
    if extra:
        copies[rng.choice(available, extra, replace=False)] += 1
    return copies


def sample(
    sources: list[MixSource], ranges: list[tuple[int, int]], kept: np.ndarray, size: int | None, seed: int
) -> tuple[np.ndarray, list[int]]:
    """Copies per pooled row (uint32 [num_rows], 0 for removed rows) and the target of each source.

    Args:
        ranges: [start, stop) of each source's rows; kept: bool per row.
    """
    available = [int(kept[lo:hi].sum()) for lo, hi in ranges]
    wanted = targets(sources, available, size)
    copies = np.zeros(len(kept), np.uint32)
    for s, (src, (lo, hi)) in enumerate(zip(sources, ranges)):
        rows = np.flatnonzero(kept[lo:hi]) + lo
        copies[rows] = draw(len(rows), wanted[s], source_rng(seed, src.label()))
    return copies, wanted


_ROUNDS = 6


def positions(first: int, count: int, num_copies: int, seed: int) -> np.ndarray:
    """Output positions (int64 [count]) of copies first .. first + count - 1 of `num_copies`: a seeded bijection
    of [0, num_copies), the same whatever range is asked for."""
    if count == 0:
        return np.zeros(0, np.int64)
    half = max(4, (max(num_copies - 1, 1).bit_length() + 1) // 2)
    keys = np.random.default_rng([seed, 0x5EED]).integers(0, 2**63, size=_ROUNDS, dtype=np.uint64)
    x = np.arange(first, first + count, dtype=np.uint64)
    out = _feistel(x, half, keys)
    outside = np.flatnonzero(out >= np.uint64(num_copies))
    while len(outside):  # cycle walking: a point of [0, n) never leaves the cycle it is on, so this ends
        out[outside] = _feistel(out[outside], half, keys)
        outside = outside[out[outside] >= np.uint64(num_copies)]
    return out.astype(np.int64)


def _feistel(x: np.ndarray, half: int, keys: np.ndarray) -> np.ndarray:
    """A permutation of [0, 4**half): Feistel rounds over the two `half`-bit halves of x."""
    from data_gen.mix.hashing import mix64

    mask, shift = np.uint64((1 << half) - 1), np.uint64(half)
    left, right = x >> shift, x & mask
    for key in keys:
        left, right = right, left ^ (mix64(right ^ key) & mask)
    return (left << shift) | right
