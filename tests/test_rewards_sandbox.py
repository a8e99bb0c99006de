"""Hostile programs in the code sandbox: each ends within its timeout with its documented reward, the host unharmed.

Every case is a response whose program attacks at import time and defines `f`, and whose one test is
`assert f() == "done"`: it passes only if the attack ran to its end without being stopped. All cases run in one
batch (the pool runs them in parallel); each test below then checks one case's reward, exit and duration, and that
nothing reached the host.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import pytest

from rewards.code_reward import get_sandbox, run_code_tests
from rewards.sandbox import Sandbox, SandboxJob, SandboxLimits, unshare_prefix

TIMEOUT_S = 2.0
# The worker's own cleanup (killing and reaping what the program left) comes on top of the program's timeout; it
# takes well under a second, but the machine may be shared.
CLEANUP_S = 3.0
SECRET = f"posttrain-secret-{secrets.token_hex(8)}"
MARKER = f"rewards_sandbox_marker_{secrets.token_hex(4)}"
REPO_FILE = Path(__file__).resolve().parent / "assets" / f"{MARKER}.txt"
HOST_TMP_FILE = Path("/tmp") / f"{MARKER}.txt"


def _program(attack: str) -> str:
    return f"import os, sys, time\n{attack}\ndef f():\n    return 'done'\n"


def _cases(port: int) -> dict[str, tuple[str, float, str]]:
    """name -> (program, documented reward, how it ends)."""
    return {
        "infinite_loop": (_program("while True:\n    pass"), 0.0, "timeout"),
        # stopped by the clock, or by the memory cap when the forked copies add up first
        "fork_bomb": (
            _program("while True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
            0.0,
            "timeout|memory",
        ),
        # each child stays under the per-process limit (256 MB); together they pass the total (512 MB)
        "fork_and_fill": (
            _program(
                "for _ in range(6):\n    if os.fork() == 0:\n        hog = b'x' * (200 * 10**6)\n        time.sleep(100)"
                "\ntime.sleep(100)"
            ),
            0.0,
            "memory",
        ),
        "memory_hog": (_program("hog = []\nwhile True:\n    hog.append(bytearray(10**7))"), 0.0, "exit 1"),
        "network_connect": (
            _program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')"),
            0.0,
            "exit 1",
        ),
        "write_repo": (_program(f"open({str(REPO_FILE)!r}, 'w').write('pwned')"), 0.0, "exit 1"),
        # /tmp is the sandbox's own tmpfs: the write succeeds there and never reaches the host's /tmp
        "write_tmp": (_program(f"open({str(HOST_TMP_FILE)!r}, 'w').write('pwned')"), 1.0, "exit 0"),
        # our own environment, then every /proc/*/environ we can see: the secret set in pytest's must not show
        "read_parent_env": (
            _program(
                "leaked = any('posttrain-secret' in v for v in os.environ.values())\n"
                "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
                "    try:\n"
                "        leaked |= b'posttrain-secret' in open(f'/proc/{pid}/environ', 'rb').read()\n"
                "    except OSError:\n"
                "        pass\n"
                "assert not leaked"
            ),
            1.0,
            "exit 0",
        ),
        "kill_parent": (
            _program(
                "import signal\n"
                f"for pid in (os.getppid(), 1, {os.getpid()}, -1):\n"
                "    try:\n"
                "        os.kill(pid, signal.SIGKILL)\n"
                "    except OSError:\n"
                "        pass"
            ),
            1.0,
            "exit 0",
        ),
        "escape_process_group": (
            _program("if os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)"),
            1.0,
            "exit 0",
        ),
    }


@pytest.fixture(scope="module")
def outcome():
    os.environ["POSTTRAIN_TEST_SECRET"] = SECRET
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    cases = _cases(server.getsockname()[1])
    completions = [f"```python\n{program}\n```" for program, _, _ in cases.values()]
    limits = SandboxLimits(timeout_s=TIMEOUT_S, memory_mb=256, max_total_memory_mb=512)
    results = run_code_tests(completions, [['assert f() == "done"']] * len(cases), limits=limits)
    try:
        server.accept()
        connected = True
    except BlockingIOError:
        connected = False
    server.close()
    by_name = {name: (result, expected, ends) for (name, (_, expected, ends)), result in zip(cases.items(), results)}
    yield {**by_name, "_connected": connected}
    del os.environ["POSTTRAIN_TEST_SECRET"]
    for path in (REPO_FILE, HOST_TMP_FILE):
        path.unlink(missing_ok=True)


CASES = list(_cases(0))


@pytest.mark.parametrize("name", CASES)
def test_hostile_program_ends_in_time_with_documented_reward(outcome, name):
    result, expected, ends = outcome[name]
    assert float(result.all_passed) == expected, result.output
    assert result.exit in ends.split("|"), result.output
    assert result.seconds < TIMEOUT_S + CLEANUP_S


def test_host_is_unaffected(outcome):
    assert not outcome["_connected"], "a sandboxed program reached a server on the host's loopback"
    assert not REPO_FILE.exists() and not HOST_TMP_FILE.exists()
    sandbox = get_sandbox()
    uids = {w.info.get("uid") for w in sandbox._workers} - {None}
    harness_uids = {w.info.get("harness_uid") for w in sandbox._workers} - {None}
    assert uids and harness_uids, "the sandbox did not drop root"
    leftovers, harnesses = [], []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if int(uid_line.split()[1]) in uids:
            leftovers.append(status.parent.name)
        if int(uid_line.split()[1]) in harness_uids:
            harnesses.append(status.parent.name)
    assert not leftovers, f"processes left running as a program uid: {leftovers}"
    assert len(harnesses) <= len(sandbox._workers), "a test harness per worker at most, and nothing it started"
    # the pool still works after all that
    ok = run_code_tests(["```python\ndef g():\n    return 1\n```"], [["assert g() == 1"]])
    assert ok[0].all_passed


def test_isolation_is_namespaces_here():
    prefix, description = unshare_prefix()
    assert prefix, "unshare --net works on these machines (FACTS.md); the sandbox should use it"
    assert "network, PID, mount, IPC and UTS namespaces" in description
    described = get_sandbox().describe()
    for part in ("read-only filesystem", "private tmpfs per job", "test harness uid", "seccomp"):
        assert part in described, described


SEMANTICS_PROGRAM = """
import collections
class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        return self.items.pop()
    def __len__(self):
        return len(self.items)
def squares(n):
    for i in range(n):
        yield i * i
def strict(x):
    if x < 0:
        raise ValueError("negative")
    return x
def sort_in_place(xs):
    xs.sort()
def scale(a, *, by=2):
    return a * by
Point = collections.namedtuple("Point", "x y")
def nested():
    return {"a": [1, (2, 3.5)], (1, 2): {4, 5}, "b": b"xy", "c": None, "d": frozenset([1]), "e": 1 + 2j, "f": range(3)}
def identity(x):
    return x
CONSTANT = {"k": [1, 2]}
"""
SEMANTICS_TESTS = (
    "s = Stack(); s.push(1); s.push(2)\nassert s.pop() == 2 and len(s) == 1 and s.items == [1]",
    "assert list(squares(4)) == [0, 1, 4, 9] and sum(squares(3)) == 5 and next(iter(squares(2))) == 0",
    "try:\n    strict(-1)\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert 'negative' in str(e)",
    "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
    "assert scale(3) == 6 and scale(3, by=3) == 9",
    "assert Point(1, 2) == (1, 2) and type(identity(Point(1, 2))) is tuple",
    "assert nested() == {'a': [1, (2, 3.5)], (1, 2): {4, 5}, 'b': b'xy', 'c': None, 'd': frozenset([1]), "
    "'e': 1 + 2j, 'f': range(3)}",
    "assert identity(2 ** 200) == 2 ** 200 and identity(True) is True and identity(None) is None",
    "import math\nassert math.isnan(identity(float('nan'))) and identity(-0.0) == 0 and identity(float('inf')) > 1",
    "assert CONSTANT['k'] == [1, 2] and isinstance(identity(3), int) and not isinstance(identity(3.0), int)",
    "assert collections.Counter('aab') == {'a': 2, 'b': 1}",  # a module the program imported, used as is
)


def test_program_values_reach_the_tests_as_plain_data():
    """The tests run in another process: the program's functions, classes, generators, exceptions, constants and
    in-place mutations still behave there as they would in one process, with exact builtin types."""
    [result] = get_sandbox().run([SandboxJob(SEMANTICS_PROGRAM, SEMANTICS_TESTS)])
    assert result.num_passed == len(SEMANTICS_TESTS), result.output


def test_program_objects_cannot_decide_a_comparison():
    program = "class Box:\n    def __eq__(self, other):\n        return True\ndef make():\n    return Box()\n"
    tests = ("assert make() == 1", "assert make() != 1", "assert make()", "assert make() is not None")
    [result] = get_sandbox().run([SandboxJob(program, tests)])
    assert result.num_passed == 1, result.output  # only the identity test, decided by the harness
    assert "cannot be compared or tested for truth" in result.output


def test_the_harness_is_reset_between_jobs():
    """One harness serves a worker's jobs: what one job's tests change (builtins, threads) does not reach the
    next, and a harness stuck in a test (here a loop of the tests' own) is replaced after the timeout."""
    with Sandbox(num_workers=1) as sandbox:
        jobs = [
            SandboxJob("x = 1", ("import builtins\nbuiltins.len = lambda x: 0\nbuiltins.extra = 1",)),
            SandboxJob("x = 1", ("assert len([1]) == 1 and not hasattr(__builtins__, 'extra')",)),
            SandboxJob("x = 1", ("import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()",)),
            SandboxJob("x = 1", ("while True:\n    pass",)),
            SandboxJob("x = 1", ("assert x == 1",)),
        ]
        results = sandbox.run(jobs, SandboxLimits(timeout_s=1.0))
    assert [r.num_passed for r in results] == [1, 1, 1, 0, 1], [r.output for r in results]
    assert results[3].exit == "timeout"


def test_without_unshare_it_warns_loudly_and_still_limits(monkeypatch):
    unshare_prefix.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.warns(RuntimeWarning, match="SANDBOX WITHOUT NAMESPACES"):
            sandbox = Sandbox(num_workers=1)
        with sandbox:
            results = sandbox.run(
                [SandboxJob("x = 1", ("assert x == 1",)), SandboxJob("while True:\n    pass", ("pass",))],
                SandboxLimits(timeout_s=1.0),
            )
        assert results[0].all_passed
        assert results[1].exit == "timeout" and results[1].seconds < 1.0 + CLEANUP_S
    finally:
        unshare_prefix.cache_clear()
