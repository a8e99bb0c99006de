"""One sandbox worker: a small Python process that runs untrusted programs one at a time, each in a forked child.

`rewards.sandbox` starts this file with `python -I`, normally under `unshare --net --pid --mount --fork
--mount-proc`, so the worker is process 1 of its own PID namespace, has no network, and sees a private tmpfs on
/tmp, /var/tmp and /dev/shm. It reads jobs from stdin and writes results to stdout, both as 4-byte length-prefixed
JSON. For each job it forks a child that makes itself a process-group leader, moves into a fresh temporary
directory, sets its rlimits (CPU, address space, file size, processes, open files), clears its environment, drops
root for an unprivileged uid of this worker's own, then runs the program and the tests in-process: starting from a
fork costs about a millisecond, where a fresh interpreter costs tens. The child reports each passed test as a line
tagged with a random nonce on a pipe, so a program that exits early passes nothing. While it runs, the worker
adds up the resident memory of the sandbox's processes every 50 ms (rlimits bound each process, not their sum).
After the child ends, the wall clock runs out or memory is exceeded, the worker kills every other process in its
namespace, reaps them and removes the directory.

Only the standard library is imported here: this file runs before, and apart from, the rest of posttrain.
"""

import contextlib
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import types

MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MNT_DETACH = 2, 4, 4096, 16384, 2
PR_SET_CHILD_SUBREAPER = 36
OUTPUT_TAIL_BYTES = 2000
MAX_REPORT_BYTES = 1 << 20
WATCH_S = 0.05
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def read_message(fd):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    return json.loads(_read_exact(fd, struct.unpack("<I", header)[0]))


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_message(fd, obj):
    data = json.dumps(obj).encode()
    os.write(fd, struct.pack("<I", len(data)) + data)


def setup(config):
    """Private tmpfs mounts when we own a mount namespace; become the reaper of orphans either way."""
    libc = ctypes.CDLL(None, use_errno=True)
    tmpfs_ok = False
    if config["namespaced"]:
        tmpfs_ok = all(
            _mount(libc, b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, f"size={config['tmpfs_mb']}m,mode=1777")
            for target in ("/tmp", "/var/tmp", "/dev/shm")
            if os.path.isdir(target)
        )
        if tmpfs_ok:
            expose_python(libc)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    uid = config["uid"]
    can_drop = os.geteuid() == 0 and uid is not None
    if can_drop:  # test that the uid exists here (a user namespace maps only 0) and can read the stdlib
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                os._exit(0 if os.access(os.path.dirname(os.__file__), os.R_OK | os.X_OK) else 1)
            except OSError:
                os._exit(1)
        can_drop = os.waitpid(pid, 0)[1] == 0
    return {"pid": os.getpid(), "tmpfs": tmpfs_ok, "uid": uid if can_drop else None}


def _mount(libc, source, target, fstype, flags, data=None):
    as_bytes = [x.encode() if isinstance(x, str) else x for x in (source, target, fstype, data)]
    return libc.mount(as_bytes[0], as_bytes[1], as_bytes[2], flags, as_bytes[3]) == 0


def expose_python(libc):
    """Let the unprivileged uid reach the interpreter's files when they sit under a private directory.

    A Python installed under /root (pyenv, uv) is unreadable to any other uid. In our own mount namespace we cover
    each such directory with an empty tmpfs and bind back only the interpreter's prefixes and sys.path entries, so
    the program can import the standard library but sees nothing else of /root.
    """
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path) if p}
    needed |= {os.path.dirname(os.path.realpath(sys.executable))}
    needed = sorted(p for p in needed if os.path.isdir(p))
    blocked = set()
    for path in needed:
        parts = path.split("/")
        for depth in range(2, len(parts)):
            ancestor = "/".join(parts[:depth])
            if not os.stat(ancestor).st_mode & 0o001:
                blocked.add(ancestor)
                break
    for ancestor in sorted(blocked):
        inside = [p for p in needed if p.startswith(ancestor + "/")]
        inside = [p for p in inside if not any(p.startswith(q + "/") for q in inside)]  # outermost only
        holders = []
        for i, path in enumerate(inside):
            holder = f"/tmp/.expose-{i}"
            os.makedirs(holder)
            _mount(libc, path, holder, None, MS_BIND | MS_REC)
            holders.append(holder)
        _mount(libc, b"tmpfs", ancestor, b"tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for path, holder in zip(inside, holders):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(libc, holder, path, None, MS_BIND | MS_REC)
            libc.umount2(holder.encode(), MNT_DETACH)
            os.rmdir(holder)


def child_main(job, nonce, report_fd, workdir, uid):
    """In the forked child: isolate, limit, then run the program and its tests. Never returns."""
    try:
        os.setpgid(0, 0)
        os.chdir(workdir)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(report_fd, 3)
        os.closerange(4, 65536)
        cpu = int(job["timeout_s"]) + 1
        limits = [
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (job["memory_mb"] << 20,) * 2),
            (resource.RLIMIT_FSIZE, (job["max_file_mb"] << 20,) * 2),
            (resource.RLIMIT_NOFILE, (256, 256)),
            (resource.RLIMIT_CORE, (0, 0)),
        ]
        if uid is not None:  # RLIMIT_NPROC counts per uid and does not bind root
            limits.append((resource.RLIMIT_NPROC, (job["max_processes"],) * 2))
        for which, value in limits:
            resource.setrlimit(which, value)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir})
        os.environ.update({"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"})
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = ["solution.py"]
        sys.path[0:0] = [workdir]
        run_tests(job, nonce)
    except BaseException:
        _print_exc()
    os._exit(1)


def run_tests(job, nonce):
    report = os.fdopen(3, "w", buffering=1)
    # a real module, so that multiprocessing can pickle the program's functions by name
    module = types.ModuleType("solution")
    module.__file__ = os.path.join(os.getcwd(), "solution.py")
    sys.modules["solution"] = module
    namespace = module.__dict__
    try:
        exec(compile(job["program"], "solution.py", "exec"), namespace)
        if job.get("setup"):
            exec(compile(job["setup"], "tests.py", "exec"), namespace)
    except BaseException:
        namespace.clear()  # a MemoryError leaves the memory taken: free it so the traceback can be printed
        _print_exc()
        os._exit(1)
    for i, test in enumerate(job["tests"]):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
            report.write(f"{nonce} {i}\n")
        except BaseException:
            _print_exc(limit=-3)
    report.flush()
    sys.stdout.flush()
    os._exit(0)


def _print_exc(limit=None):
    with contextlib.suppress(BaseException):  # out of memory or output space: the exit status says enough
        traceback.print_exc(limit=limit)


def kill_everything(child_pid, uid):
    """Kill the child's group and anything it left behind, then reap.

    As init of our PID namespace, kill(-1) reaches every process in it but us. Without a namespace, a helper that
    becomes the sandbox uid does kill(-1), which reaches only that uid's processes, and we reap what has exited.
    """
    with contextlib.suppress(OSError):
        os.killpg(child_pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(child_pid, signal.SIGKILL)
    if os.getpid() == 1:
        while True:
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
    if uid is not None:
        helper = os.fork()
        if helper == 0:
            try:
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.005)
        except ChildProcessError:
            return


def _watch(pidfd, read_fd, deadline, max_total_bytes, uid):
    """Collect the child's reports until it exits; return (reports, None) or (reports, 'timeout' | 'memory').

    RLIMIT_AS bounds each process, not their sum: a program that forks and fills memory in every child could take
    max_processes times the limit. So while the child runs we also add up the resident memory of the sandbox's
    processes every WATCH_S and stop it all past `max_total_bytes`.
    """
    data, watching, next_check = bytearray(), [pidfd, read_fd], time.monotonic() + WATCH_S
    while True:
        now = time.monotonic()
        if now >= deadline:
            return data, "timeout"
        if now >= next_check:
            if _sandbox_rss(uid) > max_total_bytes:
                return data, "memory"
            next_check = now + WATCH_S
        ready, _, _ = select.select(watching, [], [], min(deadline, next_check) - now)
        if read_fd in ready:
            chunk = os.read(read_fd, 65536)
            if chunk and len(data) < MAX_REPORT_BYTES:
                data += chunk
            elif not chunk:
                watching.remove(read_fd)
        if pidfd in ready:
            return data, None


def _sandbox_rss(uid):
    """Resident bytes of the sandbox's processes: all but us in our PID namespace, else those of its uid.

    Anonymous pages a forked process still shares with its parent count once per process, so this overestimates
    programs that fork much; the budget is set with room for that.
    """
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            if os.getpid() != 1 and (uid is None or entry.stat().st_uid != uid):
                continue
            with open(f"/proc/{entry.name}/statm", "rb") as f:
                _, resident, shared = f.read().split()[:3]
            total += (int(resident) - int(shared)) * PAGE_SIZE  # without file pages every process maps
        except (OSError, ValueError):
            pass  # it exited meanwhile
    return total


def run_job(job, uid):
    start = time.monotonic()
    nonce = os.urandom(16).hex()
    workdir = tempfile.mkdtemp(prefix="sample-", dir="/tmp")
    if uid is not None:
        os.chown(workdir, uid, uid)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the worker's loop, whatever happens
        try:
            os.close(read_fd)
            child_main(job, nonce, write_fd, workdir, uid)
        finally:
            os._exit(1)
    os.close(write_fd)
    with contextlib.suppress(OSError):  # also done by the child; whoever runs first makes the group
        os.setpgid(pid, pid)
    pidfd = os.pidfd_open(pid)
    data, stopped = _watch(pidfd, read_fd, start + job["timeout_s"], job["max_total_memory_mb"] << 20, uid)
    status = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    kill_everything(pid, uid)
    os.close(pidfd)
    os.set_blocking(read_fd, False)
    try:
        while len(data) < MAX_REPORT_BYTES and (chunk := os.read(read_fd, 65536)):
            data += chunk
    except BlockingIOError:
        pass
    os.close(read_fd)
    passed = _passed_tests(data, nonce, len(job["tests"]))
    output = _tail(os.path.join(workdir, ".output"))
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "passed": passed,
        "exit": stopped or _describe_exit(status),
        "output": output,
        "seconds": time.monotonic() - start,
    }


def _passed_tests(data, nonce, num_tests):
    """Indices of the tests reported passed on lines tagged with this job's nonce; anything else is ignored."""
    passed = set()
    for line in data.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == nonce and parts[1].isdigit() and int(parts[1]) < num_tests:
            passed.add(int(parts[1]))
    return sorted(passed)


def _describe_exit(status):
    if status is None:
        return "timeout"
    if status.si_code == os.CLD_EXITED:
        return f"exit {status.si_status}"
    if status.si_status in (signal.SIGXCPU, signal.SIGKILL):
        return "timeout"  # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one
    return f"signal {signal.Signals(status.si_status).name}"


def _tail(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - OUTPUT_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # signals from inside the namespace to its init are then ignored
    config = json.loads(sys.argv[1])
    info = setup(config)
    stdin, stdout = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    write_message(stdout, {"ready": True, **info})
    while (job := read_message(stdin)) is not None:
        try:
            result = run_job(job, info["uid"])
        except Exception:
            result = {"passed": [], "exit": "sandbox error", "output": traceback.format_exc(), "seconds": 0.0}
        write_message(stdout, result)


if __name__ == "__main__":
    main()
