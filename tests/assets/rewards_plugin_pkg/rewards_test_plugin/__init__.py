"""Example third-party rewards for posttrain's plugin tests: plain functions, found through entry points.

`shout_reward` takes no settings and no columns; `keyword_count_reward` needs a `keyword` column and has one
setting, `scale`, which a recipe sets as `{name: keyword_count, scale: 0.5}`.
"""

from __future__ import annotations


def _text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role") == "assistant")


def shout_reward(completions: list, **kwargs) -> list[float | None]:
    """1.0 for a response written in capitals, 0.0 otherwise; None for an empty one."""
    texts = [_text(c) for c in completions]
    return [None if not t.strip() else float(t.isupper()) for t in texts]


def keyword_count_reward(completions: list, keyword: list, *, scale: float = 1.0, **kwargs) -> list[float | None]:
    """`scale` times the number of times the row's keyword appears in the response."""
    return [scale * _text(c).count(k) for c, k in zip(completions, keyword)]
