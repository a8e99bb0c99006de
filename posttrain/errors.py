"""User-facing errors.

Everything a user can get wrong (a recipe, a data file, a model path, a plugin name) raises a subclass of
`UserError`. The CLI prints those as one line per problem and exits with code 2, never with a traceback. Bugs in
posttrain itself stay ordinary exceptions (and `assert` for invariants), so they keep their traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

# How a full disk shows through libraries that do not raise OSError (torch.save, safetensors).
DISK_FULL_WORDS = ("No space left on device", "StorageFull", "file write failed")


class UserError(Exception):
    """An error caused by the user's input; its message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """One or more problems in a recipe. `problems` holds one line each, already naming file, stage and field."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(UserError):
    """A data source that cannot be read: missing file, malformed row, missing column, no rows."""


class ModelError(UserError):
    """A model that cannot be resolved or loaded."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(choices: Iterable[str]) -> str:
    """Format an allowed set for an error message: 'a', 'b' or 'c'."""
    items = sorted(f"'{c}'" for c in choices)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def machine_error_line(error: BaseException, where: str | os.PathLike | None = None) -> str | None:
    """One line for what the machine refused, following the exception's causes: a full disk (naming the path and
    the space left), or a folder that cannot be written (naming it). None for anything else, which is a bug and
    keeps its traceback. `where` is the folder to name when the error itself names none."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    os_errors = [e for e in chain if isinstance(e, OSError) and e.errno is not None]
    full = [e for e in os_errors if e.errno in (errno.ENOSPC, errno.EDQUOT)]
    if full or any(word in str(e) for e in chain for word in DISK_FULL_WORDS):
        path = str((full[0].filename if full else None) or where or "the run directory")
        free = ""
        with contextlib.suppress(OSError, StopIteration):
            existing = next(p for p in (Path(path), *Path(path).parents) if p.exists())
            free = f"; {shutil.disk_usage(existing).free / 2**20:.0f} MiB free there"
        return (
            f"no space left on the device while writing {path}{free}: free some space or pass --run-dir on a bigger "
            "disk, then run the same command again (finished work is kept and the stage resumes)"
        )
    refused = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR)
    denied = [e for e in os_errors if e.errno in refused]
    if denied:
        return (
            f"cannot use {denied[0].filename or where or 'a file'} ({denied[0].strerror}): fix the path or its "
            "permissions, or use another folder (--run-dir, --out, POSTTRAIN_CACHE)"
        )
    return None
