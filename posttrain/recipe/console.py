"""What `posttrain run` shows: a header, one progress display and a result line per stage, and a closing table.

`StageLog` runs a stage with file descriptors 1 and 2 pointed at `<stage>/log.txt`: library prints, loading and
saving bars, TRL's raw metric dicts and subprocess output all land there, and the console (`posttrain.progress`)
keeps the real terminal. Python warnings and log records of WARNING and above are written to the log and also
shown on the console, except the ones known to be harmless (`HARMLESS`). With `-v` nothing is redirected. The line
formatters (`header`, `result`, `closing_table`) read only plans and manifests, so the same lines come out in CI.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from posttrain import progress
from posttrain.runs import HEADLINE_KEYS, eval_pairs, fmt

# Chatter we know to be harmless on every run: it goes to the stage log only.
HARMLESS = [
    re.compile(p)
    for p in (
        r"TRL currently supports vLLM versions",
        r"doesn't include CPU backend|Triton is not installed|triton.*CPU",
        r"torch_dtype.. is deprecated",
        r"The attention mask (and the pad token id )?(is|was) not set",
        r"Setting `pad_token_id` to `eos_token_id`",
        r"generation flags are not valid",
        r"Passing a tuple of `past_key_values`",
        r"FP8: \d+ Linear layers converted",
        r"TOKENIZERS_PARALLELISM",
        r"Could not find a config file",
        r"`use_cache=True` is incompatible with gradient checkpointing",
    )
]


def harmless(message: str) -> bool:
    return any(p.search(message) for p in HARMLESS)


class _ConsoleWarnings(logging.Handler):
    """Log records of WARNING and above that are not known chatter: also on the console."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not harmless(message):
            progress.say(f"  warning: {message.splitlines()[0][:300]}")


class StageLog:
    """Context manager: the stage's output to `log_path`, our own lines to the terminal (see the module doc)."""

    def __init__(self, log_path: Path, label: str, verbose: bool = False):
        self.path, self.label, self.verbose = log_path, label, verbose

    def __enter__(self) -> StageLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.path.open("a", encoding="utf-8", buffering=1)
        self.saved_console, self.saved_warn = progress.console(), warnings.showwarning
        sys.stdout.flush()
        sys.stderr.flush()
        if self.verbose:
            progress.set_console(self.saved_console, self.label)
            return self
        self.fds = (os.dup(1), os.dup(2))
        terminal = os.fdopen(os.dup(self.fds[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        os.dup2(self.log.fileno(), 1)
        os.dup2(self.log.fileno(), 2)
        progress.set_console(terminal, self.label)
        warnings.showwarning = self._warning
        self.handler = _ConsoleWarnings(logging.WARNING)
        logging.getLogger().addHandler(self.handler)
        return self

    def _warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line)
        self.log.write(text)
        if not harmless(str(message)):
            progress.say(f"  warning: {str(message).splitlines()[0][:300]}")

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if not self.verbose:
            logging.getLogger().removeHandler(self.handler)
            warnings.showwarning = self.saved_warn
            terminal = progress.console()
            os.dup2(self.fds[0], 1)
            os.dup2(self.fds[1], 2)
            for fd in self.fds:
                os.close(fd)
            terminal.close()
        progress.set_console(None if self.saved_console is sys.stderr else self.saved_console)
        self.log.close()


def _reads(config: dict[str, Any]) -> str:
    """What a stage reads, in a few words: its model and data sources."""
    parts = []
    for key in ("model", "data", "sources", "tokenizer"):
        value = config.get(key)
        if isinstance(value, dict) and "source" in value:
            value = value["source"]
        elif isinstance(value, list):
            value = ", ".join(
                str(v.get("source") or v.get("data", {}).get("source", v)) if isinstance(v, dict) else str(v)
                for v in value
            )
        if value:
            parts.append(f"{key}={value}")
    return "; ".join(parts)


def header(name: str, kind: str, config: dict[str, Any], status: str, reason: str) -> str:
    reads = _reads(config)
    return f"[{status}] {name} ({kind}){f' reads {reads}' if reads else ''}: {reason}"


def headline(kind: str, metrics: dict[str, Any]) -> str:
    """Before -> after of every eval the stage made, else its type's key numbers."""
    pairs = eval_pairs(metrics)
    if pairs:
        main = [p for p in pairs if "/" not in p[0] or p[0].startswith(("reward/total", "pass@1"))] or pairs
        return ", ".join(f"{k} {fmt(a)} -> {fmt(b)}" for k, a, b in main[:4])
    keys = [k for k in HEADLINE_KEYS.get(kind, ()) if k in metrics] or list(metrics)[:4]
    return ", ".join(f"{k}={fmt(metrics[k])}" for k in keys)


def result(name: str, manifest: dict[str, Any]) -> str:
    return (
        f"[done] {name} in {manifest['wall_time_s']:.1f}s: {headline(manifest['type'], manifest.get('metrics') or {})}"
    )


def closing_table(rows: list[tuple[str, str, str, float | None, str]]) -> str:
    """Aligned plain text: stage, type, status, wall time, headline (the same on a terminal and in CI logs)."""
    head = ("stage", "type", "status", "time", "result")
    cells = [head, *[(n, k, s, "" if t is None else f"{t:.1f}s", h) for n, k, s, t, h in rows]]
    widths = [max(len(str(c[i])) for c in cells) for i in range(4)]
    lines = ["  ".join(str(c[i]).ljust(widths[i]) for i in range(4)) + "  " + str(c[4]) for c in cells]
    return "\n".join([lines[0], "-" * min(len(lines[0]) + 20, 119), *lines[1:]])
