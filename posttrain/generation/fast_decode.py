"""Two costs of `model.generate` on CPU that the transformers backend avoids, without changing what is sampled from.

Measured on the embedded model (SmolLM2-135M, bf16, 2 cores), 32 prompts x 2 samples x 64 tokens: 25.1 s with
transformers' defaults; `benchmarks/generation_decode.py` has the side-by-side figures.

- **Decode attention.** With left padding there is a mask, so transformers' SDPA path copies each layer's keys and
  values to every query head (`repeat_kv`, 3x for SmolLM2's 9 query and 3 key/value heads) and calls the CPU flash
  kernel with one query row: about a quarter of the decode time. `decode_attention` computes a one-token query
  per key/value-head group with two batched matmuls instead, and hands every other case (prefill, training,
  dropout) to transformers' SDPA function unchanged. It is registered as the attention implementation
  `posttrain_decode`, whose masks are SDPA's (boolean, True = attend).
- **Sampling.** `torch.multinomial` draws one exponential per vocabulary entry (68 ms for 64 rows x 49k on this
  CPU, a fifth of a decode step). `InverseCdfSampler` draws one uniform per row and finds its token in the
  cumulative distribution: the same categorical distribution (after temperature and top-p, as HF's warpers apply
  them), about 3 ms. It runs as a logits processor under greedy decoding: it leaves 0 at the drawn token and -inf
  elsewhere, so the argmax is the sample.
"""

from __future__ import annotations

from typing import Any

from posttrain.model.attention import register_attention, switch_attention

NAME = "posttrain_decode"


def decode_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
):
    """Attention for one new token per sequence (query [B, H, 1, D], key/value [B, Hkv, L, D]); anything else goes
    to transformers' SDPA function."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or module.training or dropout or heads % kv_heads or kwargs.get("sliding_window"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scale = scaling if scaling is not None else dim**-0.5
    groups = heads // kv_heads
    q = query.reshape(batch, kv_heads, groups, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # [B, Hkv, G, L]
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, : key.shape[2]]  # [B, 1, 1, L]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [B, Hkv, G, D]
    return out.reshape(batch, 1, heads, dim), None  # [B, 1, H, D], as SDPA's function returns it


def register() -> str:
    """Register `posttrain_decode` with transformers (once) and return its name."""
    return register_attention(NAME, decode_attention)


def use_decode_attention(model: Any) -> str | None:
    """Switch a CPU model that runs SDPA attention to `posttrain_decode`; returns the implementation to restore,
    or None when nothing was changed (another implementation, a GPU, or a model that refuses the switch)."""
    if model.device.type != "cpu":
        return None
    return switch_attention(model, NAME, decode_attention)


class InverseCdfSampler:
    """A logits processor that samples the next token (see the module docstring); use it with greedy decoding."""

    def __init__(self, temperature: float, top_p: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 to sample, got {temperature}")
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            logits = _top_p(logits, self.top_p)
        probs = torch.softmax(logits, dim=-1)
        cdf = probs.cumsum(dim=-1)
        u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]
        token = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)
        # a token of zero probability never has u inside its (empty) interval, but rounding at the very top of the
        # cdf could land there: step back to the last token that has probability
        dead = probs.gather(1, token) == 0
        if dead.any():
            last = probs.shape[1] - 1 - (probs.flip(1) > 0).int().argmax(dim=1, keepdim=True)
            token = torch.where(dead, last, token)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, token, 0.0)


def _top_p(logits: Any, top_p: float) -> Any:
    """HF's TopPLogitsWarper: drop the least likely tokens whose cumulative probability is at most 1 - top_p,
    keeping at least one."""
    import torch

    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[:, -1] = False
    return logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
