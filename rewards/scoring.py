"""Scoring generated samples with configured rewards, row by row.

Generation gives one list of samples per prompt row; rewards take flat lists (TRL's batched convention). `flat_rows`
flattens the rows x samples grid (row 0's samples, then row 1's, ...), `per_row` cuts a flat list of values back
into one list per row, and `score_each` scores every sample with every reward, each sample seeing its row's columns
and its prompt. Evaluation and rejection sampling both score through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from rewards.base import Reward

S = TypeVar("S")
V = TypeVar("V")


def flat_rows(samples: Sequence[Sequence[S]]) -> list[tuple[int, S]]:
    """(row index, sample) for every sample, row 0's first."""
    return [(i, s) for i, per_row_samples in enumerate(samples) for s in per_row_samples]


def per_row(values: Sequence[V], samples: Sequence[Sequence[Any]]) -> list[list[V]]:
    """A flat list (in `flat_rows` order) cut back into one list per row of `samples`."""
    out, at = [], 0
    for row in samples:
        out.append(list(values[at : at + len(row)]))
        at += len(row)
    assert at == len(values), f"{len(values)} values for {at} samples"
    return out


def score_each(
    rows: Sequence[dict[str, Any]],
    prompts: Sequence[list[dict[str, str]]],
    samples: Sequence[Sequence[Any]],
    reward: Reward,
) -> dict[str, list[float | None]]:
    """Every reward's score of every sample, in `flat_rows` order. Each sample sees its row's columns (the union
    over rows; a row without a column gives None) and its prompt; `samples` hold objects with a `text`."""
    flat = flat_rows(samples)
    keys = dict.fromkeys(k for r in rows for k in r if k != "prompt")
    columns = {k: [rows[i].get(k) for i, _ in flat] for k in keys}
    return reward.per_reward([s.text for _, s in flat], prompts=[prompts[i] for i, _ in flat], **columns)
