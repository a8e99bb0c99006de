"""The `think_format` reward: the reasoning-then-answer layout `<think>reasoning</think>answer`.

A response scores 1.0 when it has exactly one reasoning block, opened at its start (leading whitespace allowed) and
closed once, with non-blank reasoning inside and a non-blank answer after it; 0.0 otherwise. The tags are settings.
Chat templates that open the reasoning block in the generation prompt (`think_in_prompt: true`) expect the
completion to start inside it, so only the closing tag must appear. With `answer_tags`, the answer must be wrapped
in them too (`<think>...</think><answer>...</answer>`, DeepSeek-R1's training layout).
"""

from __future__ import annotations

from typing import Any

from rewards.base import completion_texts, reward


def _validate(params: dict[str, Any]) -> list[str]:
    problems = [f"{k}: must be a non-empty tag, got {params[k]!r}" for k in ("open_tag", "close_tag") if not params[k]]
    tags = params["answer_tags"]
    if tags is not None and (len(tags) != 2 or not all(tags)):
        problems.append(f"answer_tags: must be two non-empty tags like ['<answer>', '</answer>'], got {tags!r}")
    return problems


def think_layout_ok(
    text: str,
    open_tag: str = "<think>",
    close_tag: str = "</think>",
    think_in_prompt: bool = False,
    answer_tags: tuple[str, str] | list[str] | None = None,
) -> bool:
    """Whether one response follows the `<think>reasoning</think>answer` layout (see the module docstring)."""
    if text.count(close_tag) != 1 or text.count(open_tag) != (0 if think_in_prompt else 1):
        return False
    head, answer = text.split(close_tag)
    if not think_in_prompt:
        if open_tag not in head:  # opened after it was closed
            return False
        before, head = head.split(open_tag)
        if before.strip():
            return False
    if not head.strip() or not answer.strip():
        return False
    if answer_tags:
        a_open, a_close = answer_tags
        inner = answer.strip()
        if not (inner.startswith(a_open) and inner.endswith(a_close)) or inner.count(a_open) != 1:
            return False
        if inner.count(a_close) != 1 or not inner[len(a_open) : -len(a_close)].strip():
            return False
    return True


@reward("think_format", kind="rule", validate=_validate)
def think_format_reward(
    completions: list,
    *,
    open_tag: str = "<think>",
    close_tag: str = "</think>",
    think_in_prompt: bool = False,
    answer_tags: list[str] | None = None,
    **kwargs,
) -> list[float | None]:
    """1.0 when the response is `<think>reasoning</think>answer` (tags configurable), else 0.0.

    Args:
        completions: responses, strings or chat message lists.
        open_tag / close_tag: the reasoning block's tags.
        think_in_prompt: the chat template already opened the block, so the completion must not open it again.
        answer_tags: two tags the answer must be wrapped in, e.g. ['<answer>', '</answer>']; null for none.
    """
    return [
        float(think_layout_ok(t, open_tag, close_tag, think_in_prompt, answer_tags))
        for t in completion_texts(completions)
    ]
