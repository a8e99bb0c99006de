"""Registering posttrain's attention implementations with transformers and switching a model to one.

Each implementation here takes SDPA's place for the calls it is faster on and hands every other call to SDPA's own
function, so it uses SDPA's masks (boolean, True = attend) and only replaces an SDPA model's attention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REGISTERED: set[str] = set()


def register_attention(name: str, function: Callable[..., Any]) -> str:
    """Register `function` as the attention implementation `name`, with SDPA's masks (once); returns `name`."""
    if name not in _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(name, function)
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
        _REGISTERED.add(name)
    return name


def switch_attention(model: Any, name: str, function: Callable[..., Any]) -> str | None:
    """Switch a model that runs SDPA attention to `name`. Returns the implementation to restore, or None when
    nothing changed (another implementation, or a model that refuses the switch)."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "sdpa":
        return None
    try:
        model.set_attn_implementation(register_attention(name, function))
    except (ValueError, KeyError, AttributeError, NotImplementedError):
        return None
    return previous


def restore_attention(model: Any, previous: str | None) -> None:
    """Undo `switch_attention` (nothing when it changed nothing)."""
    if previous is not None:
        model.set_attn_implementation(previous)
