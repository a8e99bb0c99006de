"""Files every layer writes: per-step JSONL logs and JSON written atomically.

`MetricsLogger` appends one JSON row per step, flushed per line, so a killed run keeps every step it logged; a kill
in the middle of a write leaves at most a torn last line, which `repair_jsonl` cuts off before anything is appended
and `read_jsonl` skips. `truncate_jsonl` cuts a log back to a checkpoint's step before a resumed run logs those
steps again. `atomic_write_json` writes a temporary sibling, fsyncs and renames it over the target, so a reader sees
the old or the new file, never half of one; `read_json` reads one back, or None when it is missing or unreadable.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per step to a JSONL file (`metrics.jsonl` in the stage directory), flushed per line
    so that a killed run keeps every step it logged. `posttrain report` plots these files."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(path)  # a row appended after a torn one would be glued onto it

    def log(self, step: int, **values: Any) -> None:
        row = {"step": step, "time": round(time.time(), 3), **values}
        # Opened per row (rows are seconds apart): nothing stays buffered when the process is killed.
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")


def repair_jsonl(path: Path) -> None:
    """Cut a torn last line (a write killed half-way: no final newline) off an append-only JSONL file."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL log; a line that does not parse (a torn write) is skipped, never fatal."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_jsonl(path: Path, after_step: int) -> None:
    """Drop rows logged past `after_step` (a row with no step counts as step 0), and any torn line, so a run
    resumed from that checkpoint does not log its steps twice."""
    if not path.is_file():
        return
    keep = [row for row in read_jsonl(path) if (row.get("step") or 0) <= after_step]
    path.write_text("".join(json.dumps(row) + "\n" for row in keep), encoding="utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary sibling, fsync, then rename over `path`: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when it is missing or cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
