"""The build's worker processes: one pool, started on first use and shared by the scan and the write passes.

Processes are spawned (nothing of the parent's threads is inherited) and each task carries its settings; a worker
keeps what is costly to set up (a tokenizer, MinHash permutations) between tasks with the same settings. With one
worker everything runs in the calling process, which is what tests patch and profilers see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any


class Workers:
    """`map` tasks over `num_workers` processes (0: one per CPU core)."""

    def __init__(self, num_workers: int):
        import os

        self.num_workers = num_workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable, tasks: Sequence[tuple], progress: Callable[[int], Any] | None = None) -> list:
        """[fn(*task) for task in tasks], in task order; `progress(1)` as each finishes."""
        if self.num_workers <= 1 or len(tasks) <= 1:
            out = []
            for task in tasks:
                out.append(fn(*task))
                if progress:
                    progress(1)
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.num_workers, get_context("spawn"))
        futures = {self._pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        out: list = [None] * len(tasks)
        try:
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                if progress:
                    progress(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
