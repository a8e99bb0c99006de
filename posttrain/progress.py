"""Progress on the console: one display per stage, on the terminal even while library output goes to the stage log.

While a stage runs, `posttrain.recipe.console.StageLog` sends file descriptors 1 and 2 (and so every library's
prints, tqdm bars and warnings) to the stage's `log.txt`, and points `console()` at the real terminal. Our own
progress goes there through `progress_bar`: a tqdm bar on an interactive terminal, and on a pipe or in CI plain
lines (`[stage] 40/100 samples  acceptance=0.31  12.0 samples/s  ETA 5 s`) at most every `PLAIN_EVERY_S`
seconds, never a carriage return. Outside a stage `console()` is plain stderr.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

PLAIN_EVERY_S = 10.0
_console: TextIO | None = None
_label = ""


def console() -> TextIO:
    """Where our own lines go: the terminal the user watches."""
    return _console or sys.stderr


def set_console(stream: TextIO | None, label: str = "") -> None:
    global _console, _label
    _console, _label = stream, label


def interactive() -> bool:
    stream = console()
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")


def say(line: str) -> None:
    """One line on the console."""
    stream = console()
    stream.write(line + "\n")
    stream.flush()


def _numbers(values: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


class PlainProgress:
    """tqdm's update / set_postfix / close for logs and pipes: a line at most every PLAIN_EVERY_S, and a last one."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0):
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.initial, self.postfix = initial, initial, {}
        self.start = self.last = time.time()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.time() - self.last >= PLAIN_EVERY_S:
            self._line()

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(values or {}), **kwargs}

    def _line(self) -> None:
        self.last = time.time()
        elapsed = max(self.last - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed  # work done before a resume is not this run's speed
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        eta = f"  ETA {(self.total - self.n) / rate:.0f} s" if self.total and rate > 0 and self.n < self.total else ""
        say(f"  [{self.desc}] {done} {self.unit}  {_numbers(self.postfix)}  {rate:.3g} {self.unit}/s{eta}".rstrip())

    def close(self) -> None:
        if self.n > self.initial:
            self._line()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Off(PlainProgress):
    def _line(self) -> None:
        pass


def progress_bar(total: int | None, desc: str = "", unit: str = "it", disable: bool = False, initial: int = 0) -> Any:
    """A stage's progress display on the console: tqdm when interactive, plain lines otherwise, nothing if disabled.
    `initial` is work already done (a resumed stage)."""
    desc = desc or _label
    if disable:
        return _Off(total, desc, unit, initial)
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(
            total=total, initial=initial, desc=f"  {desc}", unit=unit, file=console(), dynamic_ncols=True, leave=False
        )
    return PlainProgress(total, desc, unit, initial)
