"""The `repetition` reward: a penalty proportional to the share of repeated n-grams in a response.

The repetition ratio of a response is 1 - (distinct n-grams / n-grams), over whitespace-separated words (or
characters, for scripts written without spaces). Natural text with n = 3 stays near 0; a model stuck repeating
itself, a known failure of SFT on math-heavy data, goes towards 1. The reward is -max_penalty * ratio, in
[-max_penalty, 0]; a response shorter than n units has no n-grams and no penalty. `repetition_ratio` is public so
that rejection-sampling filters (`max_repetition: 0.2`) use the same measure.

This is the measure of open-r1's and TRL's `get_repetition_penalty_reward` (`this this this this this` with n = 2 is
-0.75), with two conventions of our own: words are compared as written, where those two lowercase first (which
changes nothing unless a response repeats itself in another case); and for scripts without spaces `unit: chars`
counts characters, where open-r1's `language: zh` segments words with jieba (`这个` x5 is five words, 4 bigrams of
which 1 distinct, -0.75; as characters it is 9 bigrams of which 2 distinct, -0.78). We do not depend on a word
segmenter.
"""

from __future__ import annotations

from typing import Any, Literal

from rewards.base import completion_texts, reward


def repetition_ratio(text: str, ngram: int = 3, unit: Literal["words", "chars"] = "words") -> float:
    """1 - distinct/total n-grams of `text`, in [0, 1); 0.0 when it has fewer than `ngram` units."""
    units = text.split() if unit == "words" else [c for c in text if not c.isspace()]
    total = len(units) - ngram + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(units[i : i + ngram]) for i in range(total)})
    return 1.0 - distinct / total


def _validate(params: dict[str, Any]) -> list[str]:
    problems = []
    if params["ngram"] < 1:
        problems.append(f"ngram: must be at least 1, got {params['ngram']}")
    if params["max_penalty"] < 0:
        problems.append(f"max_penalty: must be >= 0 (the reward is -max_penalty * ratio), got {params['max_penalty']}")
    return problems


@reward("repetition", kind="rule", validate=_validate)
def repetition_reward(
    completions: list,
    *,
    ngram: int = 3,
    max_penalty: float = 1.0,
    unit: Literal["words", "chars"] = "words",
    **kwargs,
) -> list[float | None]:
    """-max_penalty * (1 - distinct/total n-grams): 0 for no repetition, towards -max_penalty for endless loops.

    Args:
        completions: responses, strings or chat message lists.
        ngram: n-gram size. unit: 'words' (whitespace-separated) or 'chars' (for Chinese, Japanese, Thai, ...).
        max_penalty: the penalty at a ratio of 1.
    """
    return [0.0 - max_penalty * repetition_ratio(t, ngram, unit) for t in completion_texts(completions)]
