"""Rejection sampling, DeepSeek-V3's distillation step: sample many answers, keep the verified, well-formed ones.

For each prompt a `Generator` draws `n` samples; reward plugins score them (`CombinedReward.per_reward`); then every
sample meets the filters in this order and is charged to the first one it fails:

    truncated     generation hit max_tokens (finish reason 'length')
    too_long      more than `max_tokens` tokens (a budget below the sampling one)
    repetition    repeated-3-gram ratio above `max_repetition` (`rewards.repetition.repetition_ratio`)
    format        a required layout is missing: `nonempty`, `think` (<think>..</think>answer), `boxed` (\\boxed{})
    language      more than `max_foreign_share` of letters outside the target language's script
    incorrect     the verifier (the first reward, or `verifier`) scored below `pass_threshold`, or None
    overthinking  correct, but over `overthinking_ratio` x the shortest correct sample of the same prompt (and
                  over `overthinking_min_tokens`): R1's habit of going on after it has the answer
    duplicate     correct and clean, but the same text (up to whitespace) as an earlier survivor of the same prompt:
                  identical samples count once (`drop_duplicates`)
    not_selected  correct and clean, but the keep policy took others

The keep policy picks among the survivors: `all_correct`, `best` (highest weighted reward), `shortest_correct`, or
`first_k` (the first `keep_k` by sample index). Each kept sample yields the R1-style SFT row `<system prompt,
problem, response>` (sample type `r1`); a prompt with at least one kept sample and a reference solution also yields
one `<problem, original response>` row (type `original`; `data_gen.samples.worked_response`). Rows carry
provenance: source, source id, prompt and sample index, token count, finish reason and every reward's score, and
what the verifier read (`GOLD_COLUMNS`: the gold `answer`, the `tests` and `entry_point`, the task `metadata`), so
every kept and rejected row can be re-verified from its own columns.

Every sample, whatever its verdict, is also kept in `Outcome.samples` with its prompt, text and scores: what
`data_gen.pairs.make_pairs` turns into preference pairs <prompt, chosen (passed every filter), rejected (failed one)>.

`rejection_sample` handles one batch of prompts in memory and is what a notebook calls; `data_gen.shards` runs it
shard by shard with resume.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from posttrain.generation.base import Generator, Sample, SamplingConfig, with_system_prompt
from rewards.base import Reward
from rewards.scoring import per_row, score_each

FILTERS = (
    "truncated", "too_long", "repetition", "format", "language", "incorrect", "overthinking", "duplicate",
    "not_selected",
)  # fmt: skip
FORMAT_CHECKS = ("nonempty", "think", "boxed")
SAMPLE_TYPES = ("r1", "original")
KeepPolicy = Literal["all_correct", "best", "shortest_correct", "first_k"]
R1_SYSTEM_PROMPT = (
    "You are a careful problem solver. Think step by step inside <think> </think>: work the problem out, then "
    "reflect on your reasoning and verify the result (check each step, or solve it a second way) before you "
    "commit. After </think>, state the final answer clearly, in \\boxed{} when it is a number or expression."
)
_BOXED = re.compile(r"\\boxed\{[^{}]*\S[^{}]*\}")


@dataclass
class FilterConfig:
    """Which R1 pathologies to drop. Null turns a numeric filter off."""

    drop_truncated: bool = field(default=True, metadata={"help": "drop samples cut off by max_tokens"})
    max_tokens: int | None = field(default=None, metadata={"help": "drop samples longer than this many tokens"})
    max_repetition: float | None = field(
        default=0.3, metadata={"help": "drop samples whose repeated-n-gram ratio is above this (0..1)"}
    )
    repetition_ngram: int = field(default=3, metadata={"help": "n of the repetition ratio"})
    format: list[str] = field(
        default_factory=lambda: ["nonempty"], metadata={"help": "required layouts: nonempty, think, boxed"}
    )
    language: str | None = field(default="en", metadata={"help": "target language or script; null: no check"})
    max_foreign_share: float = field(
        default=0.05, metadata={"help": "drop samples with more than this share of letters in other scripts"}
    )
    overthinking_ratio: float | None = field(
        default=2.0, metadata={"help": "drop correct samples longer than this x the prompt's shortest correct one"}
    )
    overthinking_min_tokens: int = field(
        default=64, metadata={"help": "samples at most this long are never counted as overthinking"}
    )
    drop_duplicates: bool = field(
        default=True, metadata={"help": "identical survivors of one prompt (up to whitespace) count once"}
    )

    def check(self) -> list[str]:
        from posttrain.errors import did_you_mean, one_of
        from rewards.language import target_scripts

        problems = [
            f"format: unknown check '{f}'{did_you_mean(f, FORMAT_CHECKS)}; use {one_of(FORMAT_CHECKS)}"
            for f in self.format
            if f not in FORMAT_CHECKS
        ]
        if self.max_tokens is not None and self.max_tokens <= 0:
            problems.append(f"max_tokens: must be positive, got {self.max_tokens}")
        if self.repetition_ngram < 1:
            problems.append(f"repetition_ngram: must be at least 1, got {self.repetition_ngram}")
        if not 0 <= self.max_foreign_share <= 1:
            problems.append(f"max_foreign_share: a share in [0, 1] (0.05 = 5%), got {self.max_foreign_share}")
        if self.max_repetition is not None and not 0 <= self.max_repetition <= 1:
            problems.append(f"max_repetition: must be in [0, 1], got {self.max_repetition}")
        if self.overthinking_ratio is not None and self.overthinking_ratio < 1:
            problems.append(
                f"overthinking_ratio: must be >= 1 (a multiple of the shortest), got {self.overthinking_ratio}"
            )
        if self.language is not None and target_scripts(self.language) is None:
            problems.append(f"language: unknown language or script {self.language!r}; use e.g. en, zh, or null")
        return problems


@dataclass
class Outcome:
    """Everything rejection sampling decided for one batch of prompts."""

    rows: list[dict[str, Any]]  # the SFT rows kept (both sample types)
    rejected: list[dict[str, Any]]  # one row per dropped sample, with the filter that dropped it
    counts: Counter  # num_prompts, num_samples, num_tokens, kept, rejected/<filter>, source/<s>/..., type/<t>
    # One record per sample, every verdict: provenance, `verdict`, `completion`, `prompt` (as the model saw it),
    # `verifier` and `verifier_score`. What preference pairs are made from (`data_gen.pairs.make_pairs`).
    samples: list[dict[str, Any]] = field(default_factory=list)


def format_ok(text: str, checks: Sequence[str]) -> bool:
    from rewards.think_format import think_layout_ok

    for check in checks:
        if check == "nonempty" and not text.strip():
            return False
        if check == "think" and not think_layout_ok(text):
            return False
        if check == "boxed" and not _BOXED.search(text):
            return False
    return True


def early_verdict(sample: Sample, filters: FilterConfig) -> str | None:
    """The first reward-independent filter a sample fails, or None."""
    from rewards.language import foreign_share, target_scripts
    from rewards.repetition import repetition_ratio

    if filters.drop_truncated and sample.finish_reason == "length":
        return "truncated"
    if filters.max_tokens is not None and sample.num_tokens > filters.max_tokens:
        return "too_long"
    repetition = filters.max_repetition
    if repetition is not None and repetition_ratio(sample.text, filters.repetition_ngram) > repetition:
        return "repetition"
    if not format_ok(sample.text, filters.format):
        return "format"
    if filters.language is not None:
        scripts = target_scripts(filters.language)
        if foreign_share(sample.text, scripts) > filters.max_foreign_share:
            return "language"
    return None


def judge_samples(
    samples: Sequence[Sample],
    passed: Sequence[bool],
    totals: Sequence[float | None],
    filters: FilterConfig,
    keep: KeepPolicy = "all_correct",
    keep_k: int = 1,
) -> list[str]:
    """One prompt's samples -> a verdict each: 'kept' or the name of the filter that dropped it."""
    verdicts = [early_verdict(s, filters) or ("" if ok else "incorrect") for s, ok in zip(samples, passed)]
    alive = [i for i, v in enumerate(verdicts) if not v]
    if alive and filters.overthinking_ratio is not None:
        limit = max(
            filters.overthinking_ratio * min(samples[i].num_tokens for i in alive), filters.overthinking_min_tokens
        )
        for i in alive:
            if samples[i].num_tokens > limit:
                verdicts[i] = "overthinking"
        alive = [i for i in alive if not verdicts[i]]
    if filters.drop_duplicates:
        seen: set[str] = set()
        for i in alive:
            text = " ".join(samples[i].text.split())
            if text in seen:
                verdicts[i] = "duplicate"
            seen.add(text)
        alive = [i for i in alive if not verdicts[i]]
    if keep == "all_correct":
        chosen = alive
    elif keep == "first_k":
        chosen = alive[:keep_k]
    elif keep == "shortest_correct":
        chosen = sorted(alive, key=lambda i: (samples[i].num_tokens, i))[:1]
    else:  # best: highest weighted reward, ties to the shorter sample
        chosen = sorted(alive, key=lambda i: (-_num(totals[i]), samples[i].num_tokens, i))[:1]
    for i in alive:
        verdicts[i] = "kept" if i in chosen else "not_selected"
    return verdicts


def _num(value: float | None) -> float:
    return -math.inf if value is None else value


def source_label(row: dict[str, Any], default: str) -> str:
    """What 'per source' counts group by: a reasoning-gym task, a built-in prompt category, else the source."""
    return str(row.get("task") or row.get("category") or row.get("origin") or default)


def rejection_sample(
    generator: Generator,
    rows: Sequence[dict[str, Any]],
    reward: Reward,
    sampling: SamplingConfig,
    filters: FilterConfig | None = None,
    *,
    system_prompt: str | None = R1_SYSTEM_PROMPT,
    seed: int = 0,
    **judge_options: Any,
) -> Outcome:
    """Generate, score, filter and keep, for one batch of prompts.

    Args:
        generator: any `posttrain.generation.Generator`.
        rows: dicts with `prompt` (chat messages) and the columns the rewards need (e.g. `answer`); optional
            `source_id`, `task` / `category` (per-source counts) and a reference solution (for `original` rows).
        reward: a `rewards.CombinedReward`.
        system_prompt: prepended to every prompt for generation and kept in the `r1` rows; null: none.
        judge_options: `keep`, `keep_k`, `verifier`, `pass_threshold`, `sample_types`, `first_index`, `source`,
            `domain` (see `judge_batch`).
    Returns:
        An `Outcome` with the SFT rows, the rejected samples and the counts.
    """
    prompts = [with_system_prompt(r["prompt"], system_prompt) for r in rows]
    samples = generator.generate(prompts, **sampling.kwargs(seed))
    return judge_batch(rows, prompts, samples, reward, filters, **judge_options)


def judge_batch(
    rows: Sequence[dict[str, Any]],
    prompts: Sequence[list[dict[str, str]]],
    samples: Sequence[Sequence[Sample]],
    reward: Reward,
    filters: FilterConfig | None = None,
    *,
    keep: KeepPolicy = "all_correct",
    keep_k: int = 1,
    verifier: str | None = None,
    pass_threshold: float = 1.0,
    sample_types: Sequence[str] = SAMPLE_TYPES,
    first_index: int = 0,
    source: str = "data",
    domain: str | None = None,
) -> Outcome:
    """Score, filter and keep samples already generated for `prompts` (the rows' prompts as the model saw them).

    `verifier` names the reward that decides correctness (default: the first); `first_index` is the global index of
    rows[0], recorded as `prompt_index`; `source` labels per-source counts when a row has no task or category.
    """
    filters = filters or FilterConfig()
    scores = score_each(rows, prompts, samples, reward)
    verifier = verifier or reward.names[0]
    judge = scores[verifier]
    passed = per_row([v is not None and v >= pass_threshold for v in judge], samples)
    totals = per_row(reward.total(scores), samples)
    names = list(scores)
    per_sample = per_row([dict(zip(names, values)) for values in zip(*scores.values())], samples)
    out = Outcome([], [], Counter(num_prompts=len(rows)))
    for i, row in enumerate(rows):
        verdicts = judge_samples(samples[i], passed[i], totals[i], filters, keep, keep_k)
        ctx = _RowContext(row, first_index + i, prompts[i], source_label(row, source), domain, verifier)
        _collect(out, ctx, samples[i], verdicts, per_sample[i], totals[i], sample_types)
    return out


@dataclass
class _RowContext:
    row: dict[str, Any]
    index: int
    prompt: list[dict[str, str]]
    source: str
    domain: str | None
    verifier: str


def _collect(out: Outcome, ctx: _RowContext, samples, verdicts, scores, totals, sample_types) -> None:
    c = out.counts
    c[f"source/{ctx.source}/prompts"] += 1
    for j, (sample, verdict) in enumerate(zip(samples, verdicts)):
        c["num_samples"] += 1
        c["num_tokens"] += sample.num_tokens
        c[f"source/{ctx.source}/samples"] += 1
        base = _provenance(ctx, j, sample, scores[j], totals[j])
        out.samples.append(
            {
                **base,
                "verdict": verdict,
                "completion": sample.text,
                "prompt": ctx.prompt,
                "verifier": ctx.verifier,
                "verifier_score": scores[j].get(ctx.verifier),
            }
        )
        if verdict != "kept":
            c[f"rejected/{verdict}"] += 1
            out.rejected.append({**base, "filter": verdict, "completion": sample.text})
            continue
        c["kept"] += 1
        c[f"source/{ctx.source}/kept"] += 1
        if "r1" in sample_types:
            messages = [*ctx.prompt, {"role": "assistant", "content": sample.text}]
            out.rows.append({**base, "messages": messages, "sample_type": "r1"})
            c["type/r1"] += 1
    if "kept" not in verdicts:
        return
    c[f"source/{ctx.source}/prompts_kept"] += 1
    reference = _reference(ctx.row) if "original" in sample_types else None
    if reference:
        messages = [*_without_system(ctx.row["prompt"]), {"role": "assistant", "content": reference}]
        row = _provenance(ctx, -1, None, {}, None)
        out.rows.append({**row, "messages": messages, "sample_type": "original"})
        c["type/original"] += 1


# What a verifier reads besides the completion: kept with every row, so a dataset can be re-verified from its own
# columns after the fact (`posttrain rewards score math --data ...` on the rows).
GOLD_COLUMNS = ("answer", "tests", "entry_point", "metadata", "task")


def gold_columns(row: dict[str, Any]) -> dict[str, str | None]:
    """The row's gold columns as strings (JSON for anything that is not one), None where it has none."""
    out = {}
    for name in GOLD_COLUMNS:
        value = row.get(name)
        out[name] = value if value is None or isinstance(value, str) else json.dumps(value, default=str)
    return out


def _provenance(ctx: _RowContext, j: int, sample: Sample | None, scores: dict, total: float | None) -> dict:
    return {
        **gold_columns(ctx.row),
        "source": ctx.source,
        "source_id": prompt_id(ctx.row, ctx.source, ctx.index),
        "domain": ctx.domain or ctx.source,
        "prompt_index": ctx.index,
        "sample_index": j,
        "num_tokens": sample.num_tokens if sample else None,
        "finish_reason": sample.finish_reason if sample else None,
        "reward": total,
        "rewards": json.dumps(scores),
    }


def prompt_id(row: dict[str, Any], source: str, index: int) -> str:
    """A row's `source_id`, or `<source>/<global prompt index>` when it has none."""
    sid = row.get("source_id")
    return str(sid) if sid not in (None, "") else f"{source}/{index}"


def _reference(row: dict[str, Any]) -> str | None:
    from data_gen.samples import worked_response

    try:
        return worked_response(row)
    except (KeyError, ValueError, TypeError):
        return None


def _without_system(prompt: list[dict[str, str]]) -> list[dict[str, str]]:
    return [m for m in prompt if m.get("role") != "system"] or list(prompt)


def summarize(counts: Counter | dict[str, int]) -> dict[str, Any]:
    """Counts -> manifest metrics: acceptance overall, per filter (pass rate among the samples that reached it)
    and per source, kept rows per sample type, tokens generated."""
    num_samples = counts.get("num_samples", 0)
    out: dict[str, Any] = {
        k: counts.get(k, 0) for k in ("num_prompts", "num_samples", "num_tokens", "kept", "type/r1", "type/original")
    }
    out["acceptance"] = round(counts.get("kept", 0) / num_samples, 4) if num_samples else 0.0
    if "pairs" in counts:  # preference pairs (data_gen.pairs): how many, from how many prompts, and by filter
        out["pairs"] = counts["pairs"]
        out["pairs/prompts"] = counts.get("pairs/prompts", 0)
        out["pairs/skipped_identical"] = counts.get("pairs/skipped_identical", 0)
        out.update({k: v for k, v in sorted(counts.items()) if k.startswith("pairs/rejected/")})
    reached = num_samples
    for name in FILTERS:
        rejected = counts.get(f"rejected/{name}", 0)
        out[f"filter/{name}/rejected"] = rejected
        out[f"filter/{name}/pass_rate"] = round(1 - rejected / reached, 4) if reached else None
        reached -= rejected
    # A source label may contain '/' (a file source: 'jsonl:data/a.jsonl'); the counter name is the last part.
    sources = sorted({k[len("source/") :].rsplit("/", 1)[0] for k in counts if k.startswith("source/")})
    for s in sources:
        samples, prompts = counts.get(f"source/{s}/samples", 0), counts.get(f"source/{s}/prompts", 0)
        out[f"source/{s}/acceptance"] = round(counts.get(f"source/{s}/kept", 0) / samples, 4) if samples else 0.0
        out[f"source/{s}/prompts_kept"] = (
            round(counts.get(f"source/{s}/prompts_kept", 0) / prompts, 4) if prompts else 0.0
        )
    return out
