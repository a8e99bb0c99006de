"""Held-out evaluation: sample completions for a set of prompts and score them with reward plugins.

`evaluate(generator, rows, reward, n=4)` samples `n` completions per row's `prompt` with any `Generator` (vLLM or
transformers) and returns the metrics the `eval` stage reports and recipes place between stages to show progress:
the mean of each reward and of their weighted total, pass@1 (the fraction of samples that pass) and pass@k (the
unbiased estimator of Chen et al. 2021, k = n), where a sample passes when the `pass_reward` (default: the first
reward) scores at least `pass_threshold`; the mean length in tokens, the mean repeated-3-gram ratio and the fraction
truncated by `max_tokens`. It also returns one record per sample for inspection. `evaluate_rewards(model,
tokenizer, ...)` does the same from a model in memory (the GRPO stage scores its policy before and after training):

    from posttrain.evaluation import evaluate_rewards
    from rewards import build_reward
    evaluate_rewards(model, tok, rows, build_reward([{"name": "math"}]), num_samples=4, temperature=0.3)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from posttrain.generation.base import Generator, Sample, with_system_prompt
from rewards.base import Reward
from rewards.scoring import flat_rows, per_row, score_each


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k for one prompt: 1 - C(n - c, k) / C(n, k)."""
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(num_samples - num_correct + 1, num_samples + 1))


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the scored values; None (valid JSON, unlike NaN) when the reward scored none."""
    scored = [v for v in values if v is not None]
    return round(sum(scored) / len(scored), 4) if scored else None


def _stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean over prompts: the eval's own sampling noise (2 of them is a 95% interval)."""
    if len(values) < 2:
        return None
    return round(statistics.stdev(values) / math.sqrt(len(values)), 4)


def _per_domain(
    rows: Sequence[dict[str, Any]], per_prompt: list[int], n: int, totals: list[list[float | None]]
) -> dict[str, Any]:
    """pass@1 (with its stderr) and the mean total reward per `domain` of the rows, when there are several."""
    domains = [str(r.get("domain")) for r in rows if r.get("domain") is not None]
    if len(set(domains)) < 2 or len(domains) != len(rows):
        return {}
    out: dict[str, Any] = {}
    for domain in sorted(set(domains)):
        idx = [i for i, d in enumerate(domains) if d == domain]
        rates = [per_prompt[i] / n for i in idx]
        out[f"domain/{domain}/pass@1"] = round(sum(rates) / len(rates), 4)
        out[f"domain/{domain}/pass@1_stderr"] = _stderr(rates)
        out[f"domain/{domain}/reward/total"] = _mean([v for i in idx for v in totals[i]])
        out[f"domain/{domain}/num_prompts"] = len(idx)
    return out


def score_samples(
    rows: Sequence[dict[str, Any]],
    prompts: Sequence[list[dict[str, str]]],
    samples: Sequence[Sequence[Sample]],
    reward: Reward,
    pass_reward: str | None = None,
    pass_threshold: float = 1.0,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Score `samples` (one list of n per row) and reduce them to eval metrics; also return per-sample records."""
    from rewards.repetition import repetition_ratio

    n = len(samples[0])
    flat = flat_rows(samples)
    scores = score_each(rows, prompts, samples, reward)
    reward.reset_metrics()
    scores["total"] = reward.total(scores)
    out: dict[str, float] = {f"reward/{name}": _mean(values) for name, values in scores.items()}
    judge = scores[pass_reward or reward.names[0]]
    passed = [v is not None and v >= pass_threshold for v in judge]
    per_prompt = [sum(row) for row in per_row(passed, samples)]
    out["pass@1"] = round(sum(passed) / len(passed), 4)
    out["pass@1_stderr"] = _stderr([c / n for c in per_prompt])
    out[f"pass@{n}"] = round(sum(pass_at_k(n, c, n) for c in per_prompt) / len(rows), 4)
    out.update(_per_domain(rows, per_prompt, n, per_row(scores["total"], samples)))
    out["mean_tokens"] = round(statistics.fmean(s.num_tokens for _, s in flat), 2)
    out["repetition"] = round(statistics.fmean(repetition_ratio(s.text) for _, s in flat), 4)
    out["truncated"] = round(sum(s.finish_reason == "length" for _, s in flat) / len(flat), 4)
    out.update(num_prompts=len(rows), num_samples=n)
    records = [
        {
            "source_id": rows[i].get("source_id", i),
            "completion": s.text,
            "num_tokens": s.num_tokens,
            "finish_reason": s.finish_reason,
            "passed": passed[t],
            "rewards": {name: values[t] for name, values in scores.items()},
        }
        for t, (i, s) in enumerate(flat)
    ]
    return out, records


def evaluate(
    generator: Generator,
    rows: Sequence[dict[str, Any]] | Any,
    reward: Reward,
    *,
    n: int = 4,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_tokens: int = 256,
    seed: int = 0,
    stop: Sequence[str] = (),
    system_prompt: str | None = None,
    pass_reward: str | None = None,
    pass_threshold: float = 1.0,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Sample `n` completions per row and score them.

    Args:
        rows: a `datasets.Dataset` or a list of dicts, each with `prompt` (chat messages) and the columns the
            rewards need (e.g. `answer`).
        reward: a `rewards.CombinedReward` (from `build_reward`).
        system_prompt: a system turn prepended to prompts that have none.
        pass_reward: the reward that decides pass/fail (default: the first one).
    Returns:
        (metrics, records): `reward/<name>` per reward and `reward/total` (means over scored samples; None-scored
        samples skipped), `pass@1`, `pass@<n>`, `mean_tokens`, `repetition`, `truncated`, `num_prompts`,
        `num_samples`, `seconds`; and one record per sample.
    """
    start = time.time()
    rows = [dict(r) for r in rows]
    prompts = [with_system_prompt(r["prompt"], system_prompt) for r in rows]
    samples = generator.generate(
        prompts, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, stop=stop
    )
    metrics, records = score_samples(rows, prompts, samples, reward, pass_reward, pass_threshold)
    metrics["seconds"] = round(time.time() - start, 1)
    return metrics, records


def evaluate_rewards(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]] | Any,
    reward: Reward,
    num_samples: int = 4,
    temperature: float = 0.7,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    pass_reward: str | None = None,
    pass_threshold: float = 1.0,
) -> dict[str, float]:
    """`evaluate` with transformers generation from a model in memory; returns the metrics only."""
    from posttrain.generation.transformers_backend import TransformersGenerator

    generator = TransformersGenerator.from_model(model, tokenizer, batch_size)
    metrics, _ = evaluate(
        generator,
        rows,
        reward,
        n=num_samples,
        temperature=temperature,
        max_tokens=max_new_tokens,
        seed=seed,
        pass_reward=pass_reward,
        pass_threshold=pass_threshold,
    )
    return metrics
