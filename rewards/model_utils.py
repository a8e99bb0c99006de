"""Helpers shared by the model-based rewards: resolving model names, dtypes, chat formatting and batching.

Models are resolved with posttrain's loader (`embedded`, `tiny`, a local folder or a hub id) and loaded once per
process by each reward's own cached loader, so a reward called every GRPO step pays the load only on its first call.
`check_model` validates a model name without loading it, for `posttrain validate`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rewards.base import prompt_messages


def check_model(field: str, spec: str | None, ctx: Any = None) -> list[str]:
    """Problems with a model name, without loading it: '<field>: ...' lines. A path that a stage of the recipe will
    write (`ctx`, a `posttrain.config.CheckContext`, e.g. `${stages.rm.model}`) is not checked: it does not exist
    yet."""
    from posttrain.model.loading import check_model_spec

    if ctx is not None and spec and ctx.is_pending(spec):
        return []
    problem = check_model_spec(spec)
    return [f"{field}: {problem}"] if problem else []


def torch_dtype(name: str | None) -> Any:
    """'bfloat16' / 'float16' / 'float32' -> the torch dtype; None -> 'auto' (the checkpoint's own)."""
    import torch

    return "auto" if name is None else getattr(torch, name)


def batches(items: Sequence, size: int) -> Iterator[tuple[int, Sequence]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def question_text(prompt: Any) -> str:
    """The question a prompt asks: its last user message, or the whole conversation when it has several turns."""
    messages = prompt_messages(prompt)
    if not messages:
        return ""
    if len([m for m in messages if m.get("role") != "system"]) == 1:
        return str(messages[-1].get("content") or "")
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages if m.get("role") != "system")


def chat_text(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Messages rendered with the tokenizer's chat template, or as 'role: content' lines when it has none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return text + ("\nassistant:" if add_generation_prompt else "")


REFERENCE_TEMPLATE = "{content}\n\nReference answer: {reference}"


def with_reference(messages: list[dict], reference: Any) -> list[dict]:
    """The prompt as a reference-reading reward model sees it (DeepSeek-V3's reward model for questions with a
    free-form ground truth reads the question and the reference with the response): the last user turn gets
    `Reference answer: ...` appended. The `reward_model` stage trains on this rendering and the reward scores with
    it, so both sides always agree."""
    out = [dict(m) for m in messages]
    users = [i for i, m in enumerate(out) if m.get("role") == "user"]
    if not users:
        return [*out, {"role": "user", "content": f"Reference answer: {reference}"}]
    last = users[-1]
    out[last]["content"] = REFERENCE_TEMPLATE.format(content=out[last]["content"], reference=reference)
    return out
