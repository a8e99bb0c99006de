"""Weighted sampling of the surviving rows into the mix, with upsampling, and the shuffled output order.

Targets: a source with `count` gets exactly that many rows; the rest of `size` is split between the other sources
in proportion to their `weight` (1.0 when unset), rounded by largest remainder so that the targets add up to
`size` exactly. Without a `size`, every source gives `count` rows or all its surviving rows once.

A source with at least its target of surviving rows gives a uniform sample without replacement. One with fewer is
upsampled: every row `target // available` times, plus a uniform sample of `target % available` rows once more.
The repeat number of every copy is kept (column `repeat`). Each source draws from its own generator seeded by
(seed, source name), so adding a source does not change what the others draw.
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
    sources: list[MixSource], source_of_row: np.ndarray, kept: np.ndarray, size: int | None, seed: int
) -> tuple[np.ndarray, list[int]]:
    """Copies per pooled row (uint32 [num_rows], 0 for removed rows) and the target of each source."""
    available = [int(((source_of_row == s) & kept).sum()) for s in range(len(sources))]
    wanted = targets(sources, available, size)
    copies = np.zeros(len(source_of_row), np.uint32)
    for s, src in enumerate(sources):
        rows = np.flatnonzero((source_of_row == s) & kept)
        copies[rows] = draw(len(rows), wanted[s], source_rng(seed, src.label()))
    return copies, wanted


def positions(num_copies: int, seed: int) -> np.ndarray:
    """Output position of every copy, copies in global row order (int64 [num_copies]): a seeded shuffle."""
    return np.random.default_rng([seed, 0x5EED]).permutation(num_copies).astype(np.int64)
