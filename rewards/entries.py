"""Typed reward entries: each entry of a recipe's `rewards:` list becomes a dataclass built from its reward's signature.

`RewardEntry` holds what every entry has (`name`, `weight`, `on_error`). Its `__select__` hook tells the config
parser (`posttrain.config`) which dataclass parses an entry: `settings_class(reward)` adds one field per setting of
the named reward, typed from its signature, so an unknown setting, a wrong type, a missing required setting and the
reward's own `validate` hook are reported by the one type checker, with the file and line of the entry. The same
parser serves library callers without a recipe: `parse_entries` (used by `build_reward` and `posttrain rewards`).
`check_reward_columns` checks the dataset columns that each reward needs against the columns a source is known to
give, and `check_reward_choice` a field that names one of the rewards (`verifier`, `pass_reward`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from posttrain.config import NO_CONTEXT, CheckContext, CheckProblem, parse
from posttrain.errors import ConfigError, did_you_mean, one_of
from rewards.base import REWARDS, TRAINER_PROVIDED, describe_reward

RESERVED_KEYS = ("name", "weight", "on_error", "domains")


@dataclass
class RewardEntry:
    """One reward of a stage: `{name: code, weight: 1.0, on_error: raise, timeout_s: 5}` or just `code`."""

    __shorthand__ = "name"

    name: str = field(metadata={"help": "a registered reward, an entry point, or a dotted path pkg.mod:fn"})
    weight: float = field(default=1.0, metadata={"help": "weight in the combined reward"})
    on_error: Literal["raise", "skip"] = field(
        default="raise", metadata={"help": "a row the reward fails on: raise an error naming it, or score it None"}
    )
    domains: list[str] | None = field(
        default=None,
        metadata={"help": "score only rows whose `domain` is one of these (None elsewhere: it does not apply)"},
    )

    @classmethod
    def __select__(cls, value: dict[str, Any]) -> type | list[str]:
        """The settings class of the reward `value` names, or the problems with its name."""
        name = value.get("name")
        if not isinstance(name, str) or not name:
            return ["name: missing; every reward entry needs a name, e.g. {name: math}"]
        try:
            obj = REWARDS.get(name)
        except ConfigError as e:
            return [f"name: {p}" for p in e.problems]
        if not callable(obj):
            return [f"name: '{name}' resolves to {obj!r}, which is not callable"]
        return settings_class(obj, name)

    def settings(self) -> dict[str, Any]:
        """The reward's own settings (everything but name, weight and on_error)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in RESERVED_KEYS}


def _schema_hint(hint: Any) -> Any:
    """A reward's type hint in the config parser's vocabulary: tuples and sequences are lists (YAML has no
    tuples), a bare dict is dict[str, Any], and a hint it cannot check (a class, a callable) is Any."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (str, int, float, bool, type(None), Any):
        return hint
    if origin is Literal:
        return hint
    if origin in (Union, types.UnionType):
        return Union[tuple(_schema_hint(a) for a in args)]  # noqa: UP007 (built from a tuple)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        items = {_schema_hint(a) for a in args if a is not Ellipsis}
        return list[items.pop()] if len(items) == 1 else list[Any]
    if origin is dict or hint is dict:
        return dict[str, _schema_hint(args[1])] if len(args) == 2 else dict[str, Any]
    return Any


def _field(param: Any) -> Any:
    if param.required:
        return field()
    default = param.default
    if isinstance(default, (list, dict, set)):
        return field(default_factory=functools.partial(copy.deepcopy, default))
    return field(default=default)


@functools.cache
def settings_class(obj: Any, name: str) -> type:
    """The dataclass that parses entries of reward `obj` (registered as `name`): RewardEntry plus its settings."""
    info = describe_reward(obj)
    params = [p for p in info.params.values() if p.name not in RESERVED_KEYS]
    fields = [(p.name, _schema_hint(p.annotation), _field(p)) for p in params]

    def check(self: RewardEntry, ctx: CheckContext = NO_CONTEXT) -> list[str]:
        if info.validate is None:
            return []
        # A validate hook that takes a second argument gets the CheckContext: what the recipe's stages will write
        # (a `model: ${stages.rm.model}` setting names a folder that does not exist before the run).
        takes_ctx = len(inspect.signature(info.validate).parameters) > 1
        return list(info.validate(self.settings(), ctx) if takes_ctx else info.validate(self.settings()))

    namespace = {"__field_kind__": f"setting of reward '{name}'", "check": check}
    title = "".join(c if c.isalnum() else "_" for c in name)
    return dataclasses.make_dataclass(
        f"{title}_entry", fields, bases=(RewardEntry,), namespace=namespace, kw_only=True
    )


def _entry_data(spec: Any) -> Any:
    if isinstance(spec, RewardEntry):
        return dataclasses.asdict(spec)
    return spec


def _parse_one(i: int, spec: Any, prefix: str) -> tuple[RewardEntry, list[str]]:
    return parse(RewardEntry, _entry_data(spec), lambda path: prefix, (f"rewards[{i}]",))


def parse_entries(specs: Sequence[Any], where: str = "") -> tuple[list[RewardEntry], list[str]]:
    """Recipe-style entries (mappings, bare names, or RewardEntry objects) -> typed entries and every problem.

    Problems are labelled `rewards[i].field` after `where` (e.g. "recipes/x.yaml: stage 'rl'").
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(specs, (list, tuple)):
        return [], [f"{prefix}rewards: expected a list of entries like {{name: math, weight: 1.0}}, got {specs!r}"]
    entries, problems = [], []
    for i, spec in enumerate(specs):
        entry, found = _parse_one(i, spec, prefix)
        entries.append(entry)
        problems += found
    return entries, problems


def check_reward_columns(entries: Sequence[RewardEntry], columns: set[str] | None, first: int = 0) -> list[str]:
    """Each reward's required dataset columns against the columns a source gives (None: not known, not checked).
    `first` is the index of entries[0] in the stage's list, for the `rewards[i]` labels."""
    if columns is None:
        return []
    problems = []
    available = set(columns) | TRAINER_PROVIDED
    for i, entry in enumerate(entries, first):
        info = describe_reward(REWARDS.get(entry.name))
        needs = [*info.columns(entry.settings()), *(["domain"] if entry.domains else [])]
        for needed in needs:
            options = needed.split("|")
            if not any(option in available for option in options):
                wanted = " or ".join(f"'{o}'" for o in options)
                problems.append(
                    f"rewards[{i}] ({entry.name}): needs the dataset column {wanted}; the data has "
                    f"{one_of(columns) or 'none'}"
                )
    return problems


def check_reward_specs(specs: Sequence[Any], columns: set[str] | None = None, where: str = "") -> list[str]:
    """Check reward entries outside a recipe: every problem at once, one line each, nothing loaded but the reward's
    module. `columns` are the dataset's columns, to check each reward's required ones (None skips that check)."""
    prefix = f"{where}: " if where else ""
    if not isinstance(specs, (list, tuple)):
        return parse_entries(specs, where)[1]
    problems = []
    for i, spec in enumerate(specs):
        entry, found = _parse_one(i, spec, prefix)
        problems += found
        # A problem from the reward's own check leaves a well-typed entry, whose columns can still be checked.
        if all(isinstance(p, CheckProblem) for p in found):
            problems += [prefix + p for p in check_reward_columns([entry], columns, first=i)]
    return problems


def reward_names(specs: Sequence[Any]) -> list[str]:
    """The names `build_reward` gives its rewards (and their metrics and scores): a dotted path is named by its last
    part, and a repeated name gets a suffix (`math`, `math_2`)."""
    names, seen = [], {}
    for spec in specs:
        name = spec.name if isinstance(spec, RewardEntry) else spec if isinstance(spec, str) else spec.get("name")
        short = str(name).rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        seen[short] = seen.get(short, 0) + 1
        names.append(short if seen[short] == 1 else f"{short}_{seen[short]}")
    return names


def check_reward_choice(field_name: str, value: str | None, specs: Sequence[Any]) -> list[str]:
    """A config field naming one of the configured rewards (`verifier`, `pass_reward`): the problem, if any."""
    names = reward_names(specs)
    if value is None or value in names:
        return []
    return [f"{field_name}: '{value}' is not one of the rewards {names}{did_you_mean(value, names)}"]
