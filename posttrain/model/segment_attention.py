"""Attention over a padding-free batch, one segment at a time.

TRL's padding-free collator lays a batch's rows end to end as one sequence and passes their bounds
(`cu_seq_lens_q`). Flash attention reads those bounds natively. transformers' SDPA path instead builds a
block-diagonal mask over the whole concatenation and attends over all of it: O((sum of lengths)^2) work instead
of O(sum of length^2). On the embedded model on 2 CPU cores, that cost ate what dropping the padding saved
(`benchmarks/sft_padding.py`). `segment_attention` runs SDPA's own function once per row, causal and unmasked,
and concatenates the outputs. That is the same attention as the mask gives, with neither padding nor
cross-row work. Any call without the bounds (a padded batch, generation) goes to SDPA's function unchanged.

It is registered as the attention implementation `posttrain_segments` (masks: SDPA's), and the `sft` stage
switches an SDPA model to it while it trains padding-free.
"""

from __future__ import annotations

from typing import Any

from posttrain.model.attention import register_attention, switch_attention

NAME = "posttrain_segments"


def segment_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
):
    """query [1, H, T, D], key/value [1, Hkv, T, D] with row bounds `cu_seq_lens_q`; returns [1, T, H, D]."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if (
        bounds is None
        or query.shape[0] != 1
        or query.shape[2] != key.shape[2]  # a cache: not a training forward
        or kwargs.get("sliding_window")
        or not getattr(module, "is_causal", True)
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    kwargs.pop("is_causal", None)
    edges = [int(x) for x in bounds.tolist()]
    outs = []
    for start, end in zip(edges[:-1], edges[1:]):
        if end > start:
            out, _ = sdpa_attention_forward(
                module,
                query[:, :, start:end],
                key[:, :, start:end],
                value[:, :, start:end],
                None,
                dropout,
                scaling,
                is_causal=True,
                **kwargs,
            )
            outs.append(out)
    return torch.cat(outs, dim=1), None


def register() -> str:
    """Register `posttrain_segments` with transformers (once) and return its name."""
    return register_attention(NAME, segment_attention)


def use_segment_attention(model: Any) -> str | None:
    """Switch a model that runs SDPA attention to `posttrain_segments` (flash attention reads the row bounds
    itself). Returns the implementation to restore, or None when nothing changed."""
    return switch_attention(model, NAME, segment_attention)
