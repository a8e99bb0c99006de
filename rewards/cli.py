"""`posttrain rewards list` and `posttrain rewards score`: see every reward plugin, or score a JSONL file with one.

    posttrain rewards list
    posttrain rewards score math --data answers.jsonl
    posttrain rewards score code --data solutions.jsonl --param mode=fraction --param timeout_s=10 --out scored.jsonl

`score` reads one JSON object per line: the response in the `completion` field (a string or chat messages; another
field with `--completion-column`) and every other field passed to the reward as a column, `prompt` also as TRL's
`prompts`. It checks the reward's settings and columns first, then writes each row with its `score` added (None
where the reward does not apply) and prints a summary.
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
    """Add `rewards list` and `rewards score` to posttrain's argparse subparsers; each sets `func(args) -> int`."""
    parser = subparsers.add_parser("rewards", help="list reward plugins, or score a JSONL file with one")
    sub = parser.add_subparsers(dest="rewards_command", required=True)
    sub.add_parser("list", help="every reward: kind, settings with defaults, required columns").set_defaults(
        func=cmd_list
    )
    score = sub.add_parser("score", help="score the completions of a JSONL file with one reward")
    score.add_argument("name", help="a reward name (see `posttrain rewards list`) or a dotted path pkg.mod:fn")
    score.add_argument("--data", required=True, help="JSONL file, one object per line with a completion field")
    score.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a reward setting; the value is YAML"
    )
    score.add_argument("--out", help="where to write the scored rows (default: DATA with .scores.jsonl)")
    score.add_argument("--completion-column", default="completion", help="the field holding the response")
    score.set_defaults(func=cmd_score)


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


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSONL file; DataError naming the file and line for anything unreadable."""
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
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


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


def cmd_score(args: argparse.Namespace) -> int:
    from rewards import build_reward, check_reward_specs

    spec = {"name": args.name, **parse_params(args.param)}
    rows = read_jsonl(args.data)
    columns = sorted({key for row in rows for key in row})
    if args.completion_column not in columns:
        raise DataError(
            f"{args.data}: no '{args.completion_column}' field to score; the rows have {', '.join(columns)} "
            "(name the field with --completion-column)"
        )
    data_columns = set(columns) - {args.completion_column}
    problems = check_reward_specs([spec], data_columns, where=f"rewards score {args.name}")
    if problems:
        raise ConfigError(problems)
    combined = build_reward([spec], where=f"rewards score {args.name}")
    kwargs = {c: [row.get(c) for row in rows] for c in data_columns}
    if "prompt" in kwargs:
        kwargs.setdefault("prompts", kwargs["prompt"])
    start = time.perf_counter()
    scores = combined.funcs[0]([row.get(args.completion_column) for row in rows], **kwargs)
    seconds = time.perf_counter() - start
    out = Path(args.out) if args.out else Path(args.data).with_suffix(".scores.jsonl")
    with out.open("w", encoding="utf-8") as f:
        for row, score in zip(rows, scores):
            f.write(json.dumps({**row, "score": score}, ensure_ascii=False) + "\n")
    print(_summary(args.name, scores, seconds, out))
    return 0
