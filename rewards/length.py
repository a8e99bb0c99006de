"""The `length` reward: penalties for overlong responses and a bonus for shorter correct ones.

`mode: soft_overlong` is DAPO's soft overlong punishment: 0 up to `max_length - cache_length`, then falling linearly
to -1 at `max_length`, and -1 beyond. `mode: shorter_correct` is Kimi k1.5's length reward against overthinking:
among the completions of the same prompt, lambda = 0.5 - (len - min_len) / (max_len - min_len); a correct one (math
equivalence with the `answer` column) gets lambda, a wrong one min(0, lambda). `part: think` measures only the
reasoning inside `<think>...</think>`.

Lengths are in tokens from TRL's `completion_ids` (whole completions), or from `tokenizer` when one is named; with
neither, whitespace-separated words are counted and a warning says so. `unit: chars` and `unit: words` are exact.

Where implementations differ: in `shorter_correct` a response whose gold does not parse as mathematics scores None
(not applicable), as the `math` reward has it (its length still counts in its group's shortest and longest);
open-r1's `len_reward` counts such a response correct and gives the shortest one the full 0.5 bonus. A length
bonus for answers nobody can check would reward brevity alone.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from typing import Any, Literal

from rewards.base import completion_texts, reward, row_value, split_think
from rewards.math_reward import math_correct


def soft_overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment for one response of `length`: in [-1, 0]."""
    threshold = max_length - cache_length
    if length <= threshold:
        return 0.0
    if length <= max_length:
        return (threshold - length) / cache_length
    return -1.0


def shorter_correct_bonus(lengths: list[int], correct: list[float | None]) -> list[float | None]:
    """Kimi k1.5's length reward for one group of responses to the same prompt: in [-0.5, 0.5]."""
    shortest, longest = min(lengths), max(lengths)
    out: list[float | None] = []
    for length, ok in zip(lengths, correct):
        lam = 0.0 if longest == shortest else 0.5 - (length - shortest) / (longest - shortest)
        out.append(None if ok is None else (lam if ok else min(0.0, lam)))
    return out


@lru_cache(maxsize=4)
def _load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    try:
        from posttrain.model.loading import resolve_model

        spec = resolve_model(spec)
    except ImportError:
        pass
    return AutoTokenizer.from_pretrained(spec)


def _validate(params: dict[str, Any]) -> list[str]:
    problems = []
    if params["max_length"] <= 0:
        problems.append(f"max_length: must be > 0, got {params['max_length']}")
    if not 0 < params["cache_length"] <= params["max_length"]:
        problems.append(
            f"cache_length: must be in (0, max_length={params['max_length']}], got {params['cache_length']}"
        )
    if params["tokenizer"] is not None and params["unit"] != "tokens":
        problems.append(f"tokenizer: only used with unit: tokens, but unit is {params['unit']!r}")
    return problems


def measure_lengths(
    texts: list[str], completion_ids: list | None, unit: str, tokenizer: str | None, part: str
) -> list[int]:
    """Length of each response (or of its reasoning, for part='think') in the given unit."""
    if part == "think":
        texts = [split_think(t)[0] for t in texts]
    if unit == "chars":
        return [len(t) for t in texts]
    if unit == "tokens" and tokenizer is not None:
        tok = _load_tokenizer(tokenizer)
        return [len(tok.encode(t, add_special_tokens=False)) for t in texts]
    if unit == "tokens" and part == "all" and completion_ids is not None and len(completion_ids) == len(texts):
        return [len(ids) for ids in completion_ids]
    if unit == "tokens":
        warnings.warn(
            "length: unit 'tokens' needs TRL's completion_ids (whole completions only) or a `tokenizer` setting; "
            "counting whitespace-separated words instead",
            stacklevel=3,
        )
    return [len(t.split()) for t in texts]


@reward(
    "length",
    kind="rule",
    columns=lambda p: ("answer",) if p["mode"] == "shorter_correct" else (),
    validate=_validate,
)
def length_reward(
    completions: list,
    completion_ids: list | None = None,
    answer: list | None = None,
    *,
    mode: Literal["soft_overlong", "shorter_correct"] = "soft_overlong",
    max_length: int = 4096,
    cache_length: int = 512,
    unit: Literal["tokens", "words", "chars"] = "tokens",
    tokenizer: str | None = None,
    part: Literal["all", "think"] = "all",
    **kwargs,
) -> list[float | None]:
    """DAPO's soft overlong penalty (in [-1, 0]) or Kimi's shorter-correct bonus (in [-0.5, 0.5]).

    Args:
        completions: responses, strings or chat message lists.
        completion_ids: token ids per completion, as TRL passes them.
        answer: gold answers, needed by mode 'shorter_correct'.
        mode: 'soft_overlong' or 'shorter_correct'.
        max_length / cache_length: DAPO's L_max and L_cache, in `unit`s.
        unit: 'tokens', 'words' or 'chars'. tokenizer: a model (path, hub id, 'embedded') to count tokens with.
        part: 'all' or 'think' (only the reasoning block, for overthinking).
    """
    texts = completion_texts(completions)
    lengths = measure_lengths(texts, completion_ids, unit, tokenizer, part)
    if mode == "soft_overlong":
        return [soft_overlong_penalty(n, max_length, cache_length) for n in lengths]
    if answer is None:
        raise ValueError("length: mode 'shorter_correct' needs the `answer` column")
    correct = [math_correct(t, g) for t, g in zip(texts, answer)]
    prompts = kwargs.get("prompts") or kwargs.get("prompt")
    groups: dict[str, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(json.dumps(row_value(prompts, i, len(texts)), sort_keys=True, default=str), []).append(i)
    out: list[float | None] = [None] * len(texts)
    for rows in groups.values():
        for i, value in zip(rows, shorter_correct_bonus([lengths[i] for i in rows], [correct[i] for i in rows])):
            out[i] = value
    return out
