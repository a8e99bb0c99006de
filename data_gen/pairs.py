"""Preference pairs: <prompt, chosen, rejected> rows for reward-model training and DPO.

Rejection sampling already makes what a reward model needs: several samples per prompt, split by the filters and
the verifier into samples that passed every filter and samples charged to the filter they failed. `make_pairs`
turns one batch of judged samples (`data_gen.rejection.Outcome.samples`) into pairs: for each prompt with at least
one sample that passed (kept, or passed but not selected by the keep policy) and one rejected by a filter named in
`PairsConfig.rejected`, up to `per_prompt` pairs, each sample used before any is reused. A pair whose two texts are
the same is skipped and counted. Rows are in TRL's conversational preference format (`prompt` as the model saw it,
`chosen` and `rejected` as one assistant turn each) with why the rejected one failed (`rejected_filter`, and
`rejected_reason` naming the verifier and its score for `incorrect`), both weighted rewards, each side's token
count and finish reason, and the prompt's provenance and gold columns.

`load_pairs(source, where)` reads pairs from any source (a stage's `pairs` folder, `jsonl:`, `parquet:`,
`hf-disk:`): `chosen` / `rejected` may be strings or assistant turns, `prompt` a string or messages; a missing
column, an empty side, identical sides or a source with no pairs is a `DataError` naming the file and row and the
fix. `split_pairs` holds out whole prompts (no prompt is on both sides of the split); `score_pairs` scores both
sides with a sequence classifier in memory, rendered as the `reward_model` reward renders them;
`score_pairs_with_reward` scores them with any configured reward (e.g. `llm_judge` as a baseline);
`pair_metrics` reduces scores to pairwise accuracy (ties count half) and mean margin, overall and per filter.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_gen.rejection import FILTERS, GOLD_COLUMNS
from data_gen.sources import SourceConfig

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
# What a rejected side may have failed: not a copy of a passing sample, nor one the keep policy passed over.
REJECTION_FILTERS = tuple(f for f in FILTERS if f not in ("not_selected", "duplicate"))
PASSED = ("kept", "not_selected")  # verdicts of samples that passed every filter: the chosen side


@dataclass
class PairsConfig:
    """Which preference pairs a rejection-sampling stage writes to `pairs/`."""

    per_prompt: int = field(default=1, metadata={"help": "pairs per prompt at most (0: write no pairs)"})
    rejected: list[str] = field(
        default_factory=lambda: ["incorrect"],
        metadata={
            "help": "filters whose rejections make the rejected side: incorrect (the verifier), truncated, too_long, "
            "repetition, format, language, overthinking"
        },
    )

    def check(self) -> list[str]:
        from posttrain.errors import did_you_mean, one_of

        problems = []
        if self.per_prompt < 0:
            problems.append(f"per_prompt: must be >= 0 (0 writes no pairs), got {self.per_prompt}")
        for name in self.rejected:
            if name not in REJECTION_FILTERS:
                problems.append(
                    f"rejected: unknown filter '{name}'{did_you_mean(name, REJECTION_FILTERS)}; "
                    f"use {one_of(REJECTION_FILTERS)}"
                )
        if self.per_prompt > 0 and not self.rejected:
            problems.append("rejected: name at least one filter (e.g. [incorrect]), or set per_prompt: 0")
        return problems


def _reason(sample: dict[str, Any]) -> str:
    if sample["verdict"] == "incorrect":
        return f"incorrect: verifier '{sample['verifier']}' scored {sample['verifier_score']}"
    return sample["verdict"]


def _pair_row(chosen: dict[str, Any], rejected: dict[str, Any]) -> dict[str, Any]:
    row = {
        "prompt": chosen["prompt"],
        "chosen": [{"role": "assistant", "content": chosen["completion"]}],
        "rejected": [{"role": "assistant", "content": rejected["completion"]}],
        "rejected_filter": rejected["verdict"],
        "rejected_reason": _reason(rejected),
    }
    for side, s in (("chosen", chosen), ("rejected", rejected)):
        row.update(
            {
                f"{side}_reward": s["reward"],
                f"{side}_rewards": s["rewards"],
                f"{side}_sample_index": s["sample_index"],
                f"{side}_num_tokens": s["num_tokens"],
                f"{side}_finish_reason": s["finish_reason"],
            }
        )
    for key in ("source", "source_id", "domain", "prompt_index", *GOLD_COLUMNS):
        row[key] = chosen.get(key)
    return row


def make_pairs(samples: Sequence[dict[str, Any]], config: PairsConfig) -> tuple[list[dict[str, Any]], Counter]:
    """Judged samples (`Outcome.samples`, any number of prompts) -> (pair rows, counts).

    Counts: `pairs`, `pairs/prompts` (prompts that gave at least one), `pairs/rejected/<filter>` and
    `pairs/skipped_identical`."""
    counts: Counter = Counter()
    if config.per_prompt <= 0:
        return [], counts
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt_index"], []).append(s)
    rows = []
    for group in by_prompt.values():
        group = sorted(group, key=lambda s: s["sample_index"])
        chosen = [s for s in group if s["verdict"] == "kept"] + [s for s in group if s["verdict"] == "not_selected"]
        rejected = [s for s in group if s["verdict"] in config.rejected]
        made = 0
        # Pair k is (chosen[k % C], rejected[k % R]): for k < max(C, R) the pairs are distinct and every sample is
        # used once before any is used twice.
        for k in range(max(len(chosen), len(rejected)) if chosen and rejected else 0):
            if made >= config.per_prompt:
                break
            c, r = chosen[k % len(chosen)], rejected[k % len(rejected)]
            if c["completion"].strip() == r["completion"].strip():
                counts["pairs/skipped_identical"] += 1
                continue
            rows.append(_pair_row(c, r))
            counts[f"pairs/rejected/{r['verdict']}"] += 1
            made += 1
        counts["pairs"] += made
        counts["pairs/prompts"] += int(made > 0)
    return rows, counts


# ---- reading pairs from any source ---------------------------------------------------------------------------


def _files(source: str) -> list[str]:
    from data_gen.sources import parse_source

    ref = parse_source(source)
    if ref.scheme not in ("jsonl", "parquet", "path"):
        return []
    target = os.path.expanduser(ref.target)
    if os.path.isdir(target):
        return sorted(glob.glob(os.path.join(target, "*.parquet")))
    return sorted(glob.glob(target))


def _count_rows(files: list[str]) -> int | None:
    """Rows in pair files without reading them (Parquet metadata, non-blank JSONL lines); None if unknown."""
    import pyarrow.parquet as pq

    if not files:
        return None
    total = 0
    for path in files:
        if path.endswith(".parquet"):
            total += pq.read_metadata(path).num_rows
        elif path.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                total += sum(1 for line in f if line.strip())
        else:
            return None
    return total


def _locator(files: list[str]):
    """Row index -> 'file: row N' (N from 1) over a list of Parquet files, for error messages."""
    import pyarrow.parquet as pq

    spans: list[tuple[int, str]] = []  # (first row, file)
    start = 0
    for path in files:
        if path.endswith(".parquet"):
            spans.append((start, path))
            start += pq.read_metadata(path).num_rows

    def where(i: int, source: str) -> str:
        for first, path in reversed(spans):
            if i >= first:
                return f"{path}: row {i - first + 1}"
        return f"{source}: row {i + 1}"

    return where


def _jsonl_rows(files: list[str], on_error: str, where: str) -> list[tuple[str, dict[str, Any]]]:
    """('file:line', row) for every row of JSONL pair files. Read here rather than through `datasets`: the sides may
    be strings in one row and messages in the next, which one column cannot hold before they are normalized."""
    from posttrain.errors import DataError

    rows = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                except ValueError as e:
                    if on_error == "skip":
                        continue
                    raise DataError(f"{where}: {path}:{lineno}: {e}; fix the line or set on_error: skip") from None
                rows.append((f"{where}: {path}:{lineno}", row))
    return rows


def _side(value: Any, name: str, at: str) -> list[dict[str, str]]:
    """A chosen / rejected value (a string or assistant turns) -> assistant turns; raises DataError."""
    from posttrain.errors import DataError

    if value is None:
        raise DataError(f"{at}: '{name}' is missing; every pair needs a prompt, a chosen and a rejected response")
    if isinstance(value, str):
        value = [{"role": "assistant", "content": value}]
    ok = isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value)
    if not ok:
        raise DataError(f"{at}: '{name}' must be a string or a list of {{role, content}} messages, got {value!r:.60}")
    roles = {m.get("role", "assistant") for m in value}
    if roles - {"assistant"}:
        raise DataError(
            f"{at}: '{name}' holds a {sorted(roles - {'assistant'})[0]} turn; give only the response "
            "(the conversation before it goes in 'prompt')"
        )
    if not "".join(m["content"] for m in value).strip():
        raise DataError(f"{at}: '{name}' is empty; every pair needs a non-empty chosen and rejected (drop the row)")
    return [{"role": "assistant", "content": m["content"]} for m in value]


def check_pair(row: dict[str, Any], at: str) -> dict[str, Any]:
    """One pair row, normalized (`chosen` / `rejected` as assistant turns); raises DataError naming `at`."""
    from data_gen.sources import normalize_row
    from posttrain.errors import DataError

    try:
        row = normalize_row(row)
    except ValueError as e:
        raise DataError(f"{at}: {e}; a pair's prompt is a string or a list of messages") from None
    chosen, rejected = _side(row.get("chosen"), "chosen", at), _side(row.get("rejected"), "rejected", at)
    if chosen == rejected:
        raise DataError(f"{at}: chosen and rejected are identical; a pair must prefer one response over another")
    return {**row, "chosen": chosen, "rejected": rejected}


def load_pairs(cfg: SourceConfig | str | list[SourceConfig], where: str):
    """Load and check preference pairs from any source, or from a list of them (pooled in order: e.g. the pairs of
    several experts' rejection sampling); returns a `datasets.Dataset` with `prompt`, `chosen` and `rejected` (chat
    format) and whatever other columns the sources have (e.g. `rejected_filter`; None where a source has none).

    Raises:
        DataError: a missing column, an empty side, identical sides (naming the file and row), or no pairs.
    """
    import datasets
    import pyarrow.parquet as pq

    from data_gen.sources import load_source
    from posttrain.errors import DataError

    if isinstance(cfg, list):
        parts = [load_pairs(one, f"{where}[{i}]").to_list() for i, one in enumerate(cfg)]
        keys = list(dict.fromkeys(k for part in parts for row in part for k in row))
        return datasets.Dataset.from_list([{**dict.fromkeys(keys), **row} for part in parts for row in part])
    if isinstance(cfg, str):
        cfg = SourceConfig(source=cfg)
    files = _files(cfg.source)
    if _count_rows(files) == 0:
        raise DataError(
            f"{where}: '{cfg.source}' holds no pairs; a rejection_sampling stage writes a pair only for a prompt with "
            "both a passing and a rejected sample: raise sampling.n or data.size, or add filters to pairs.rejected"
        )
    jsonl = bool(files) and all(f.endswith(".jsonl") for f in files)
    if jsonl:
        located = _jsonl_rows(files, cfg.on_error, where)
        _check_columns(list(dict.fromkeys(k for _, r in located for k in r)), cfg.source, where)
        rows = [check_pair(row, at) for at, row in located]
    elif files and all(f.endswith(".parquet") for f in files):
        for path in files:  # each file's own columns, so a message can name the file that lacks one
            _check_columns(pq.read_schema(path).names, path, where)
        ds = datasets.Dataset.from_parquet(files)
        locate = _locator(files)
        rows = [check_pair(row, f"{where}: {locate(i, cfg.source)}") for i, row in enumerate(ds.to_list())]
    else:  # hf-disk, or what load_source can tell
        ds = load_source(dataclasses.replace(cfg, size=None, shuffle=False))
        _check_columns(ds.column_names, cfg.source, where)
        locate = _locator(files)
        rows = [check_pair(row, f"{where}: {locate(i, cfg.source)}") for i, row in enumerate(ds.to_list())]
    out = datasets.Dataset.from_list(rows)
    if cfg.shuffle:
        out = out.shuffle(seed=cfg.seed)
    if cfg.size is not None:
        out = out.select(range(min(cfg.size, len(out))))
    return out


def _check_columns(columns: list[str], source: str, where: str) -> None:
    from posttrain.errors import DataError

    missing = [c for c in PAIR_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{where}: '{source}' has no column {' or '.join(repr(c) for c in missing)} (columns: {columns}); "
            "pairs need 'prompt', 'chosen' and 'rejected', as a rejection_sampling stage's `pairs` output has them"
        )


def split_pairs(ds: Any, eval_size: int, seed: int, where: str) -> tuple[Any, Any]:
    """(train, held-out) pairs, holding out whole prompts until at least `eval_size` pairs; (ds, None) for 0."""
    from posttrain.errors import DataError

    if eval_size == 0:
        return ds, None
    keys = [json.dumps(p, sort_keys=True) for p in ds["prompt"]]
    prompts = list(dict.fromkeys(keys))
    random.Random(seed).shuffle(prompts)
    sizes = Counter(keys)
    held, count = set(), 0
    for p in prompts:
        if count >= eval_size:
            break
        held.add(p)
        count += sizes[p]
    if len(held) == len(prompts):
        raise DataError(
            f"{where}: {len(ds)} pairs from {len(prompts)} prompts cannot spare eval_size={eval_size} pairs of whole "
            "prompts; lower eval_size or give more pairs"
        )
    train = [i for i, k in enumerate(keys) if k not in held]
    test = [i for i, k in enumerate(keys) if k in held]
    return ds.select(train), ds.select(test)


# ---- scoring pairs ----------------------------------------------------------------------------------------------


def _texts(side: list[dict[str, str]]) -> str:
    return "".join(m["content"] for m in side)


def score_pairs(model: Any, tokenizer: Any, pairs: Any, batch_size: int = 16, max_length: int = 2048):
    """(chosen scores, rejected scores) of a one-output sequence classifier in memory, each pair rendered as the
    `reward_model` reward renders it: the prompt plus the response as the assistant turn, through the chat
    template, cut from the left to `max_length` tokens."""
    import torch

    from rewards.model_utils import batches, chat_text

    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    was_training = model.training
    model.eval()
    out = []
    try:
        for name in ("chosen", "rejected"):
            texts = [chat_text(tokenizer, [*p, *c]) for p, c in zip(pairs["prompt"], pairs[name])]
            scores: list[float] = []
            for _, chunk in batches(texts, batch_size):
                enc = tokenizer(
                    list(chunk), return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                    add_special_tokens=False,
                ).to(model.device)  # fmt: skip
                with torch.inference_mode():
                    scores.extend(model(**enc).logits.float()[:, 0].tolist())
            out.append(scores)
    finally:
        tokenizer.truncation_side = side
        model.train(was_training)
    return out[0], out[1]


def score_pairs_with_reward(reward: Any, pairs: Any) -> dict[str, tuple[list, list]]:
    """Each reward's (chosen scores, rejected scores), by name. The rewards see every column of the pairs (the gold
    `answer`, for `llm_judge` in reference mode) and the prompt."""
    # Plain lists: rewards read a column row by row only when it is a list (datasets 5 returns Column objects).
    columns = {k: list(pairs[k]) for k in pairs.column_names if k not in PAIR_COLUMNS}
    out = {}
    for name in ("chosen", "rejected"):
        texts = [_texts(side) for side in pairs[name]]
        for reward_name, values in reward.per_reward(texts, prompts=list(pairs["prompt"]), **columns).items():
            out.setdefault(reward_name, []).append(values)
    return {k: (v[0], v[1]) for k, v in out.items()}


def pair_metrics(
    chosen: Sequence[float | None], rejected: Sequence[float | None], filters: Sequence[str] | None = None
) -> dict[str, float]:
    """Pairwise accuracy (chosen scored above rejected; a tie counts half, an unscored pair is skipped) and the mean
    margin (chosen - rejected), overall and per rejected filter (`accuracy/<filter>`, `pairs/<filter>`)."""
    scored = [(c, r, f) for c, r, f in zip(chosen, rejected, filters or [None] * len(chosen)) if None not in (c, r)]

    def reduce(items: list) -> tuple[float | None, float | None]:
        if not items:
            return None, None
        wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r, _ in items)
        return round(wins / len(items), 4), round(sum(c - r for c, r, _ in items) / len(items), 4)

    accuracy, margin = reduce(scored)
    out: dict[str, Any] = {"accuracy": accuracy, "margin": margin, "pairs": len(scored)}
    for f in sorted({f for _, _, f in scored if f is not None}):
        items = [x for x in scored if x[2] == f]
        out[f"accuracy/{f}"], _ = reduce(items)
        out[f"pairs/{f}"] = len(items)
    return out


def prompt_rows(pairs: Any) -> list[dict[str, Any]]:
    """One row per distinct prompt of `pairs`, with the prompt's own columns (gold `answer`, `task`, `metadata`,
    `source_id`, ...) and none of a side's: what a generation eval of the held-out prompts samples from."""
    side = ("chosen", "rejected")
    keep = [c for c in pairs.column_names if c not in side and not c.startswith(side)]
    out: dict[str, dict[str, Any]] = {}
    for row in pairs.select_columns(keep).to_list():
        out.setdefault(json.dumps(row["prompt"], sort_keys=True), row)
    return list(out.values())
