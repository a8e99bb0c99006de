"""`posttrain rewards list | score | check`: see every reward plugin, score a JSONL file with one, or measure one
against labels.

    posttrain rewards list
    posttrain rewards score math --data answers.jsonl
    posttrain rewards score code --data solutions.jsonl --param mode=fraction --param timeout_s=10 --out scored.jsonl
    posttrain rewards check math --data labelled.jsonl --label correct
    posttrain rewards check llm_judge --data labelled.jsonl --label correct --param mode=reference

`score` reads one JSON object per line: the response in the `completion` field (a string or chat messages; another
field with `--completion-column`) and every other field passed to the reward as a column, `prompt` also as TRL's
`prompts`. It checks the reward's settings and columns first (every row must have each column the reward needs),
then writes each row with its `score` added (None where the reward does not apply) and prints a summary.

`check` scores the same way a file whose rows also carry a label (`--label FIELD`: true/false or 1/0, whether the
response deserves the reward) and prints how far the reward agrees with it: agreement at `--threshold` (a score at
or above it says "true"; default 0.5), a confusion table of labels against thresholded scores, and, for a
model-based reward or any reward whose scores are not all 0 and 1, the ROC AUC (the chance that a true row outscores
a false one, ties counting half) and the best threshold (the score value at or above which "true" agrees with the
most labels; the lowest such value on ties) with its agreement. Rows scoring None are counted apart and left out of
the figures. Exit codes: 0 when the check ran, 2 for a user error (a file, a line, a field or a setting), one line.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from posttrain.errors import ConfigError, DataError


def add_subcommands(subparsers: Any) -> None:
    """Add `rewards list|score|check` to posttrain's argparse subparsers; each sets `func(args) -> int`."""
    parser = subparsers.add_parser("rewards", help="list reward plugins, score a JSONL file with one, or check one")
    sub = parser.add_subparsers(dest="rewards_command", required=True)
    sub.add_parser("list", help="every reward: kind, settings with defaults, required columns").set_defaults(
        func=cmd_list
    )
    score = sub.add_parser("score", help="score the completions of a JSONL file with one reward")
    _data_arguments(score)
    score.add_argument("--out", help="where to write the scored rows (default: DATA with .scores.jsonl)")
    score.set_defaults(func=cmd_score)
    check = sub.add_parser("check", help="measure a reward against labels: agreement, confusion table, ROC AUC")
    _data_arguments(check)
    check.add_argument("--label", required=True, help="the field holding each row's label: true/false or 1/0")
    check.add_argument(
        "--threshold", type=float, default=0.5, help="a score at or above it counts as 'true' (default 0.5)"
    )
    check.set_defaults(func=cmd_check)


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a reward name (see `posttrain rewards list`) or a dotted path pkg.mod:fn")
    parser.add_argument("--data", required=True, help="JSONL file, one object per line with a completion field")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a reward setting; the value is YAML"
    )
    parser.add_argument("--completion-column", default="completion", help="the field holding the response")


def _describe_params(info) -> str:
    return "\n".join(p.describe() for p in info.params.values()) or "-"


def _describe_columns(info) -> str:
    needed = info.columns()
    text = ", ".join(c.replace("|", " or ") for c in needed) or "-"
    return text + (" (depends on settings)" if callable(info.column_spec) else "")


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rewards import REWARDS, describe_reward

    table = Table(title="rewards (configure in a recipe as {name: NAME, weight: W, SETTING: VALUE, ...})")
    for column in ("name", "kind", "settings (default)", "needs columns", "what it scores"):
        table.add_column(column, overflow="fold")
    for name, obj in REWARDS.items():
        info = describe_reward(obj)
        table.add_row(name, info.kind, _describe_params(info), _describe_columns(info), info.summary)
    Console().print(table)
    return 0


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`['timeout_s=5', 'mode=fraction']` -> `{'timeout_s': 5, 'mode': 'fraction'}`, values read as YAML."""
    import yaml

    params, problems = {}, []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(f"--param {pair!r}: write it as KEY=VALUE, e.g. --param timeout_s=5")
            continue
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            problems.append(f"--param {pair!r}: the value is not valid YAML ({e})")
    if problems:
        raise ConfigError(problems)
    return params


def read_jsonl_lines(path: str) -> list[tuple[int, dict]]:
    """(line number, row) of each row of a JSONL file; DataError naming the file and line for anything unreadable."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"--data {path}: no such file")
    rows = []
    with file.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSONL file; DataError naming the file and line for anything unreadable."""
    return [row for _, row in read_jsonl_lines(path)]


def _summary(name: str, scores: list[float | None], seconds: float, out: Path) -> str:
    values = [s for s in scores if s is not None]
    lines = [f"{name}: {len(scores)} rows scored in {seconds:.1f} s -> {out}"]
    lines.append(f"  scored {len(values)}, not applicable (None) {len(scores) - len(values)}")
    if values:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        lines.append(f"  mean {mean:.4g}  std {std:.4g}  min {min(values):.4g}  max {max(values):.4g}")
        counts = Counter(values)
        if len(counts) <= 10:
            lines.append("  values: " + ", ".join(f"{v:g} x {c}" for v, c in sorted(counts.items())))
    return "\n".join(lines)


def _prepare(args: argparse.Namespace, exclude: tuple[str, ...] = ()):
    """Read `--data`, check the reward against its columns and rows, and build it: (rows with line numbers, the
    bound reward, the completions, the column kwargs). `exclude` are fields that are not reward columns."""
    from rewards import build_reward, check_reward_specs

    spec = {"name": args.name, **parse_params(args.param)}
    numbered = read_jsonl_lines(args.data)
    rows = [row for _, row in numbered]
    columns = sorted({key for row in rows for key in row})
    if args.completion_column not in columns:
        raise DataError(
            f"{args.data}: no '{args.completion_column}' field to score; the rows have {', '.join(columns)} "
            "(name the field with --completion-column)"
        )
    data_columns = set(columns) - {args.completion_column, *exclude}
    problems = check_reward_specs([spec], data_columns, where=f"rewards {args.rewards_command} {args.name}")
    if problems:
        raise ConfigError(problems)
    bound = build_reward([spec], where=f"rewards {args.rewards_command} {args.name}").funcs[0]
    needed = [[o for o in c.split("|") if o in data_columns] for c in bound.info.columns(bound.params)]
    for number, row in numbered:
        if args.completion_column not in row:
            raise DataError(f"{args.data}:{number}: no '{args.completion_column}' field to score")
        for options in needed:
            if options and not any(o in row for o in options):
                raise DataError(f"{args.data}:{number}: no '{options[0]}' field, which reward '{args.name}' needs")
    kwargs = {c: [row.get(c) for row in rows] for c in data_columns}
    if "prompt" in kwargs:
        kwargs.setdefault("prompts", kwargs["prompt"])
    return numbered, bound, [row.get(args.completion_column) for row in rows], kwargs


def cmd_score(args: argparse.Namespace) -> int:
    numbered, bound, completions, kwargs = _prepare(args)
    start = time.perf_counter()
    scores = bound(completions, **kwargs)
    seconds = time.perf_counter() - start
    out = Path(args.out) if args.out else Path(args.data).with_suffix(".scores.jsonl")
    with out.open("w", encoding="utf-8") as f:
        for (_, row), score in zip(numbered, scores):
            f.write(json.dumps({**row, "score": score}, ensure_ascii=False) + "\n")
    print(_summary(args.name, scores, seconds, out))
    return 0


_TRUE, _FALSE = ("true", "yes", "1", "correct"), ("false", "no", "0", "incorrect")


def _label(value: Any, where: str, field: str) -> bool:
    """A row's label as a bool: true/false, 1/0 (numbers or strings), yes/no, correct/incorrect."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise DataError(f"{where}: label '{field}' must be true/false or 1/0, got {json.dumps(value)}")


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """The probability that a true row scores above a false one, ties counting half (Mann-Whitney U / n_pos n_neg);
    None when one of the classes is empty."""
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum, i = 0.0, 0
    while i < len(order):  # average ranks (1-based) over each run of tied scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        rank_sum += sum((i + j) / 2 + 1 for k in order[i : j + 1] if labels[k])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def best_threshold(scores: list[float], labels: list[bool]) -> tuple[float, int]:
    """(threshold, rows agreeing): the score value t for which "score >= t is true" agrees with the most labels,
    the lowest such t on ties (inf when calling every row false is best)."""
    pairs = sorted(zip(scores, labels))
    agree = sum(labels)  # t = the lowest score: every row is called true
    best = (agree, pairs[0][0]) if pairs else (0, math.inf)
    i = 0
    while i < len(pairs):  # raise t past each run of tied scores: those rows are now called false
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            agree += -1 if pairs[j][1] else 1
            j += 1
        t = pairs[j][0] if j < len(pairs) else math.inf
        if agree > best[0]:
            best = (agree, t)
        i = j
    return best[1], best[0]


def _check_report(name: str, data: str, field: str, scores: list, labels: list[bool], threshold: float,
                  continuous: bool, seconds: float) -> str:  # fmt: skip
    scored = [(s, lab) for s, lab in zip(scores, labels) if s is not None]
    n_true = sum(labels)
    lines = [
        f"{name} on {data}: {len(labels)} rows, label '{field}' ({n_true} true, {len(labels) - n_true} false), "
        f"scored in {seconds:.1f} s"
    ]
    none_true = sum(1 for s, lab in zip(scores, labels) if s is None and lab)
    none_false = sum(1 for s, lab in zip(scores, labels) if s is None and not lab)
    table = {(lab, s >= threshold): 0 for lab in (True, False) for s in (threshold, -math.inf)}
    for s, lab in scored:
        table[(lab, s >= threshold)] += 1
    agree = table[(True, True)] + table[(False, False)]
    if scored:
        lines.append(f"  agreement at threshold {threshold:g}: {agree / len(scored):.3f} ({agree} / {len(scored)})")
    else:
        lines.append("  agreement: no row has a score (every row is None)")
    head = f"score >= {threshold:g}", f"score < {threshold:g}", "None"
    lines.append(f"  {'':12}{head[0]:>14}{head[1]:>14}{head[2]:>8}")
    for lab, none in ((True, none_true), (False, none_false)):
        cells = table[(lab, True)], table[(lab, False)], none
        lines.append(f"  {'label ' + str(lab).lower():12}{cells[0]:>14}{cells[1]:>14}{cells[2]:>8}")
    if continuous and scored:
        values, flags = [s for s, _ in scored], [lab for _, lab in scored]
        auc = roc_auc(values, flags)
        t, best = best_threshold(values, flags)
        lines.append(f"  ROC AUC: {'undefined (one class only)' if auc is None else f'{auc:.4f}'}")
        lines.append(f"  best threshold: {t:.6g} (score >= it is true): agreement {best / len(scored):.3f} "
                     f"({best} / {len(scored)})")  # fmt: skip
        for lab in (True, False):
            group = [s for s, flag in scored if flag == lab]
            if group:
                lines.append(
                    f"  mean score, label {str(lab).lower()}: {sum(group) / len(group):.6g} ({len(group)} rows)"
                )
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    numbered, bound, completions, kwargs = _prepare(args, exclude=(args.label,))
    labels = []
    for number, row in numbered:
        if args.label not in row:
            raise DataError(f"{args.data}:{number}: no '{args.label}' field (the --label)")
        labels.append(_label(row[args.label], f"{args.data}:{number}", args.label))
    start = time.perf_counter()
    scores = bound(completions, **kwargs)
    seconds = time.perf_counter() - start
    values = {s for s in scores if s is not None}
    continuous = bound.info.kind == "model" or not values <= {0.0, 1.0}
    print(_check_report(args.name, args.data, args.label, scores, labels, args.threshold, continuous, seconds))
    return 0
