"""User-facing errors.

Everything a user can get wrong (a recipe, a data file, a model path, a plugin name) raises a subclass of
`UserError`. The CLI prints those as one line per problem and exits with code 2, never with a traceback. Bugs in
posttrain itself stay ordinary exceptions (and `assert` for invariants), so they keep their traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
