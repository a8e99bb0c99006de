"""The `think_format` reward: the reasoning-then-answer layout `<think>reasoning</think>answer`.

A response scores 1.0 when it has exactly one reasoning block, opened at its start (leading whitespace allowed) and
closed once, with a non-blank answer after it; 0.0 otherwise. The tags are settings.
Chat templates that open the reasoning block in the generation prompt (`think_in_prompt: true`) expect the
completion to start inside it, so only the closing tag must appear. With `answer_tags`, the answer must be wrapped
in them too (`<think>...</think><answer>...</answer>`, DeepSeek-R1's training layout).

Conventions, where implementations differ:

- An empty reasoning block (`<think></think>answer`) is well-formed, as TRL's `think_format_reward` and open-r1's
  `format_reward` have it (and as Qwen3 writes it in non-thinking mode): the reward checks the layout, not the
  reasoning. `require_reasoning: true` demands non-blank reasoning; `think_layout_ok` (the rejection-sampling filter
  `format: think`, which keeps distillation samples that do reason) demands it by default.
- Text before the block, a second block, a block closed before it is opened and an unclosed block all score 0.0,
  as in TRL; open-r1's regex additionally wants each tag on its own line, which we do not.
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
    require_reasoning: bool = True,
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
    if (require_reasoning and not head.strip()) or not answer.strip():
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
    require_reasoning: bool = False,
    **kwargs,
) -> list[float | None]:
    """1.0 when the response is `<think>reasoning</think>answer` (tags configurable), else 0.0.

    Args:
        completions: responses, strings or chat message lists.
        open_tag / close_tag: the reasoning block's tags.
        think_in_prompt: the chat template already opened the block, so the completion must not open it again.
        answer_tags: two tags the answer must be wrapped in, e.g. ['<answer>', '</answer>']; null for none.
        require_reasoning: score 0.0 when the reasoning block is blank (by default an empty block is well-formed).
    """
    return [
        float(think_layout_ok(t, open_tag, close_tag, think_in_prompt, answer_tags, require_reasoning))
        for t in completion_texts(completions)
    ]
