"""Held-out reward evaluation: sample completions for a set of prompts and score them with reward plugins.

`evaluate_rewards(model, tokenizer, rows, reward)` renders each row's `prompt` (chat messages) with the chat
template, samples `num_samples` completions per prompt with transformers' batched generation (left padding), and
scores them with a `CombinedReward`. It returns the mean of each reward and of their weighted total, pass@1 (the
fraction of samples that pass) and pass@k (the unbiased estimator of Chen et al. 2021, k = `num_samples`), where a
sample passes when the `pass_reward` (default: the first reward) scores at least `pass_threshold`. The GRPO stage
calls it before and after training; it needs no recipe and works from a notebook:

    from posttrain.evaluation import evaluate_rewards
    from rewards import build_reward
    evaluate_rewards(model, tok, rows, build_reward([{"name": "math"}]), num_samples=4, temperature=0.3)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k for one prompt: 1 - C(n - c, k) / C(n, k)."""
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(num_samples - num_correct + 1, num_samples + 1))


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    num_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    seed: int = 0,
) -> list[list[str]]:
    """Sample `num_samples` completions per chat prompt; returns one list of strings per prompt.

    `batch_size` counts sequences (prompts x samples) per `generate` call. temperature 0 means greedy.
    """
    import torch

    prompts_per_batch = max(1, batch_size // num_samples)
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training, use_cache = model.training, model.config.use_cache
    model.eval()
    model.config.use_cache = True
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else {}
    out: list[list[str]] = []
    try:
        with torch.random.fork_rng(), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, len(texts), prompts_per_batch):
                batch = tokenizer(
                    texts[start : start + prompts_per_batch],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(model.device)
                ids_BT = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    **(sampling or dict(do_sample=False)),
                )
                decoded = tokenizer.batch_decode(ids_BT[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
                out.extend(decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples))
    finally:
        tokenizer.padding_side = padding_side
        model.config.use_cache = use_cache
        model.train(was_training)
    return out


def evaluate_rewards(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]] | Any,
    reward: Any,
    num_samples: int = 4,
    temperature: float = 0.7,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    pass_reward: str | None = None,
    pass_threshold: float = 1.0,
) -> dict[str, float]:
    """Score sampled completions of held-out rows.

    Args:
        rows: a `datasets.Dataset` or a list of dicts, each with `prompt` (chat messages) and the columns the
            rewards need (e.g. `answer`).
        reward: a `rewards.CombinedReward` (from `build_reward`).
        pass_reward: the reward that decides pass/fail (default: the first one).
    Returns:
        `reward/<name>` per reward and `reward/total` (means over scored samples; None-scored samples skipped),
        `pass@1`, `pass@<num_samples>`, `num_prompts`, `num_samples`, `seconds`.
    """
    start = time.time()
    rows = [dict(r) for r in rows]
    prompts = [r["prompt"] for r in rows]
    samples = generate_completions(
        model, tokenizer, prompts, num_samples, temperature, max_new_tokens, batch_size, seed
    )
    completions = [c for per_prompt in samples for c in per_prompt]
    columns = {k: [r[k] for r in rows for _ in range(num_samples)] for k in rows[0] if k != "prompt"}
    scores = reward.per_reward(completions, prompts=[p for p in prompts for _ in range(num_samples)], **columns)
    reward.reset_metrics()
    scores["total"] = reward.total(scores)
    out: dict[str, float] = {}
    for name, values in scores.items():
        scored = [v for v in values if v is not None]
        out[f"reward/{name}"] = round(sum(scored) / len(scored), 4) if scored else float("nan")
    judge = scores[pass_reward or reward.names[0]]
    passed = [v is not None and v >= pass_threshold for v in judge]
    per_prompt = [sum(passed[i : i + num_samples]) for i in range(0, len(passed), num_samples)]
    out["pass@1"] = round(sum(passed) / len(passed), 4)
    out[f"pass@{num_samples}"] = round(sum(pass_at_k(num_samples, c, num_samples) for c in per_prompt) / len(rows), 4)
    out.update(num_prompts=len(rows), num_samples=num_samples, seconds=round(time.time() - start, 1))
    return out
