"""A sandbox for running untrusted programs against tests: a pool of isolated workers, used by the `code` reward.

Each worker (`rewards/sandbox_worker.py`) is a separate Python process started under `unshare --net --pid --mount
--fork --mount-proc`: it has no network (not even loopback), sees only its own processes, and mounts a private
tmpfs over /tmp, /var/tmp and /dev/shm. It runs one program at a time in a forked child that leads its own process
group, works in a fresh temporary directory, has CPU-time, address-space, file-size, process-count and open-file
rlimits, an environment stripped of ours, and runs as an unprivileged uid of its own; the worker also caps the
resident memory of all the program's processes together. On the wall-clock timeout the worker kills the child's
group and every other process in its namespace. Workers run in parallel, one per core by
default; forking a warm worker instead of starting an interpreter per program is what makes the pool fast.

Without `unshare` (or where it is not permitted) the pool still runs, with the rlimits, the uid and the timeout but
without the namespaces, and says so loudly with a warning.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
NAMESPACES = ["--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]
# How long past a job's own timeout we wait for its worker before declaring the worker dead and restarting it.
WORKER_GRACE_S = 10.0
WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class SandboxJob:
    """A program and its tests. `setup` runs after the program (e.g. HumanEval's `def check`); each test is code
    that passes when it runs without raising."""

    program: str
    tests: tuple[str, ...]
    setup: str = ""


@dataclass(frozen=True)
class SandboxLimits:
    """Per program: wall-clock seconds (CPU seconds get one more), address space per process, size per written
    file, processes per sandbox uid, and resident memory of all its processes together (checked every 50 ms)."""

    timeout_s: float = 5.0
    memory_mb: int = 1024
    max_file_mb: int = 16
    max_processes: int = 64
    max_total_memory_mb: int = 2048


@dataclass(frozen=True)
class SandboxResult:
    """`exit` is 'exit N', 'timeout', 'memory', 'signal NAME', 'no code' or 'sandbox error'; `output` is the tail
    of the program's stdout and stderr."""

    num_passed: int
    num_tests: int
    exit: str
    output: str
    seconds: float

    @property
    def all_passed(self) -> bool:
        return self.num_tests > 0 and self.num_passed == self.num_tests

    @property
    def fraction(self) -> float:
        return self.num_passed / self.num_tests if self.num_tests else 0.0


@lru_cache(maxsize=1)
def unshare_prefix() -> tuple[tuple[str, ...], str]:
    """The command prefix that isolates a worker here, and a description of it; probed once per process."""
    reasons = []
    for prefix in (["unshare", *NAMESPACES], ["unshare", "--map-root-user", *NAMESPACES]):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            reasons.append(str(e))
            continue
        if probe.returncode == 0:
            return tuple(prefix), "network, PID and mount namespaces (" + " ".join(prefix) + ")"
        reasons.append(probe.stderr.strip() or f"exit {probe.returncode}")
    message = (
        "SANDBOX WITHOUT NAMESPACES: `unshare` is unavailable or not permitted here "
        f"({'; '.join(reasons)}). Programs run with rlimits, a timeout and a separate uid when root, but they can "
        "reach the network and see other processes. Run as root or enable unprivileged user namespaces to fix it."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    logger.warning(message)
    return (), "NO NAMESPACES (unshare unavailable)"


class _Worker:
    """One worker process and its pipes. Not thread-safe: the pool hands each worker to one thread at a time."""

    def __init__(self, uid: int, tmpfs_mb: int, python: str):
        self.uid, self.tmpfs_mb, self.python = uid, tmpfs_mb, python
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self) -> None:
        prefix, _ = unshare_prefix()
        config = {"namespaced": bool(prefix), "tmpfs_mb": self.tmpfs_mb, "uid": self.uid}
        cmd = [*prefix, self.python, "-I", str(WORKER_SCRIPT), json.dumps(config)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=WORKER_ENV, cwd="/", start_new_session=True
        )
        ready = self._read(time.monotonic() + 30)
        if not ready or not ready.get("ready"):
            self.kill()
            raise RuntimeError(f"sandbox worker failed to start: {' '.join(cmd[:-1])}")
        self.info = ready

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # unshare and the worker; the namespace dies with its init
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()
        self.proc = None

    def _read(self, deadline: float) -> dict | None:
        fd = self.proc.stdout.fileno()
        header = self._read_exact(fd, 4, deadline)
        if header is None:
            return None
        body = self._read_exact(fd, struct.unpack("<I", header)[0], deadline)
        return None if body is None else json.loads(body)

    @staticmethod
    def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
        data = b""
        while len(data) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def run(self, job: SandboxJob, limits: SandboxLimits) -> SandboxResult:
        if self.proc is None:
            self.start()
        message = {
            "program": job.program,
            "tests": list(job.tests),
            "setup": job.setup,
            "timeout_s": limits.timeout_s,
            "memory_mb": limits.memory_mb,
            "max_file_mb": limits.max_file_mb,
            "max_processes": limits.max_processes,
            "max_total_memory_mb": limits.max_total_memory_mb,
        }
        start = time.monotonic()
        data = json.dumps(message).encode()
        try:
            self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
            reply = self._read(start + limits.timeout_s + WORKER_GRACE_S)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:  # the worker died or hung: replace it; the program gets no credit
            self.kill()
            return SandboxResult(0, len(job.tests), "sandbox error", "worker lost", time.monotonic() - start)
        return SandboxResult(len(reply["passed"]), len(job.tests), reply["exit"], reply["output"], reply["seconds"])


class Sandbox:
    """A pool of isolated workers. `run(jobs, limits)` returns one `SandboxResult` per job, in order."""

    def __init__(self, num_workers: int | None = None, tmpfs_mb: int = 256, python: str = sys.executable):
        self.num_workers = num_workers or len(os.sched_getaffinity(0))
        _, self.isolation = unshare_prefix()
        uid_base = 60000 + (os.getpid() % 1000) * 32  # distinct per pool in practice: RLIMIT_NPROC counts per uid
        self._workers = [_Worker(uid_base + i, tmpfs_mb, python) for i in range(self.num_workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="sandbox")
        self._lock = threading.Lock()
        atexit.register(self.close)

    def describe(self) -> str:
        """The isolation programs actually get here (starts one worker to find out)."""
        worker = self._idle.get()
        try:
            if worker.proc is None:
                worker.start()
            info = worker.info
        finally:
            self._idle.put(worker)
        parts = [self.isolation]
        if info.get("tmpfs"):
            parts.append("private /tmp")
        parts.append(f"uid {info['uid']}" if info.get("uid") is not None else "SAME UID AS THE WORKER (root)")
        parts.append("rlimits cpu/as/fsize/nproc/nofile, wall-clock timeout, stripped environment")
        return "; ".join(parts)

    def _run_one(self, job: SandboxJob, limits: SandboxLimits) -> SandboxResult:
        worker = self._idle.get()
        try:
            return worker.run(job, limits)
        finally:
            self._idle.put(worker)

    def run(self, jobs: list[SandboxJob], limits: SandboxLimits = SandboxLimits()) -> list[SandboxResult]:
        futures = [self._pool.submit(self._run_one, job, limits) for job in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True)
            for w in self._workers:
                w.kill()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
