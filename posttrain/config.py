"""Typed configs from plain YAML data, reporting every problem at once: the one type checker of the project.

`parse(cls, data, where)` builds the dataclass `cls` from a mapping and returns it with a list of problems, each
one line naming where it is (`file:line: stage 'x': field.sub`), what is wrong and the fix. Supported field
types: str, int, float (finite: NaN and inf are refused), bool, Any, Literal[...], `X | None`, list[X],
dict[str, X] and nested dataclasses. A dataclass with a `__shorthand__` attribute also accepts a bare string for
that field (`data: jsonl:a.jsonl`); one with a `__select__(value)` classmethod picks the dataclass that parses each
value (a reward entry is parsed by the settings class of the reward it names). After building, a config's
optional `check()` adds cross-field problems as "field: message" lines; a `check(ctx)` that takes an argument gets
the `CheckContext` (what the recipe around it will write), so no layer has to reach up to the recipe for it.

The stage configs, the reward entries, the data sources and the generation settings are all parsed here; the recipe
loader adds file and line numbers, and library code (`rewards.build_reward`) uses the same `parse` without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from posttrain.errors import did_you_mean, one_of

# Where(path) -> "file:line: stage 'x': " prefix. The loader builds it from the YAML node marks.
Where = Callable[[tuple], str]


@dataclasses.dataclass(frozen=True)
class CheckContext:
    """What a config's `check(ctx)` may know of the recipe around it: the paths its stages will write, which do not
    exist while the recipe is validated (a source `${stages.distill.dataset}` is not a missing file)."""

    pending_outputs: tuple[str, ...] = ()

    def is_pending(self, path: str) -> bool:
        """Whether `path` is (or lies inside) an output that a stage of the recipe will write."""
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.pending_outputs)


NO_CONTEXT = CheckContext()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + one_of(str(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return str(tp)


def _has_shape(tp: Any, value: Any) -> bool:
    """Whether `value` is written the way `tp` is (a list for a list, a mapping or shorthand string for a config),
    whatever its contents: which arm of a union a user meant, to report that arm's problems."""
    if typing.get_origin(tp) is list:
        return isinstance(value, list)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict) or (isinstance(value, str) and bool(getattr(tp, "__shorthand__", None)))
    return False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(
    tp: Any, value: Any, path: tuple, where: Where, problems: list[str], ctx: CheckContext = NO_CONTEXT
) -> Any:
    """Check `value` against `tp`; return the converted value (problems appended on mismatch)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    label = ".".join(str(p) for p in path)

    def bad(expected: str | None = None) -> None:
        problems.append(f"{where(path)}{label}: expected {expected or _type_name(tp)}, got {_show(value)}")

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms:
            trial: list[str] = []
            out = _coerce(arm, value, path, where, trial, ctx)
            if not trial:
                return out
        if len(arms) == 1:  # X | None: report X's own problem, which is more precise
            return _coerce(arms[0], value, path, where, problems, ctx)
        shaped = [a for a in arms if _has_shape(a, value)]
        if len(shaped) == 1:  # the arm the value is spelled as (a source string, a list): its own problems
            return _coerce(shaped[0], value, path, where, problems, ctx)
        bad()
        return value
    if origin is Literal:
        if value not in args:
            problems.append(
                f"{where(path)}{label}: {_show(value)} is not allowed{did_you_mean(str(value), map(str, args))}; "
                f"use {one_of(str(a) for a in args)}"
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad()
        return value
    if tp is float:
        # PyYAML reads `1e-4` (no dot) as a string; accept any numeric string for float fields.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad()
            return value
        if not math.isfinite(value):  # YAML reads .nan and .inf; no setting of ours means either
            bad("a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            bad()
        return value
    if origin is list:
        if not isinstance(value, list):
            bad()
            return value
        return [_coerce(args[0], v, (*path, i), where, problems, ctx) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            bad()
            return value
        return {k: _coerce(args[1], v, (*path, k), where, problems, ctx) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        shorthand = getattr(tp, "__shorthand__", None)
        if isinstance(value, str) and shorthand:
            value = {shorthand: value}
        if not isinstance(value, dict):
            bad()
            return value
        select = getattr(tp, "__select__", None)
        if select is not None:
            chosen = select(value)
            if isinstance(chosen, list):  # the value names no class; the problems say why
                problems.extend(f"{where(path)}{label}{'.' if label else ''}{p}" for p in chosen)
                return value
            tp = chosen
        return _build(tp, value, path, where, problems, ctx)
    raise TypeError(f"unsupported config field type {tp!r} at {label}")  # a bug in a config class


class CheckProblem(str):
    """A problem found by a config's `check()`: its object was built from well-typed values, so the enclosing
    config's own check can still run and report its problems in the same pass."""


def _build(cls: type, data: dict, path: tuple, where: Where, problems: list[str], ctx: CheckContext) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    num_before = len(problems)
    kind = getattr(cls, "__field_kind__", "field")  # what a field is called in messages ("setting of reward 'x'")
    kwargs = {}
    for key, value in data.items():
        label = ".".join(map(str, (*path, key)))
        if key not in fields:
            problems.append(
                f"{where((*path, key))}{label}: unknown {kind}{did_you_mean(str(key), fields)}; "
                f"valid fields are {one_of(fields)}"
            )
            continue
        kwargs[key] = _coerce(hints[key], value, (*path, key), where, problems, ctx)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            help_text = f.metadata.get("help", "")
            label = ".".join(map(str, (*path, name)))
            problems.append(
                f"{where(path)}{label}: missing required {kind}" + (f" ({help_text})" if help_text else "")
            )
            kwargs[name] = None  # construction must not fail; the problem already says what to fix
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check) and all(isinstance(p, CheckProblem) for p in problems[num_before:]):
        prefix = ".".join(map(str, path))
        for problem in check(ctx) if inspect.signature(check).parameters else check():
            problems.append(CheckProblem(f"{where(path)}{prefix + '.' if prefix else ''}{problem}"))
    return obj


def parse(
    cls: type, data: Any, where: Where = lambda path: "", path: tuple = (), ctx: CheckContext = NO_CONTEXT
) -> tuple[Any, list[str]]:
    """Build dataclass `cls` from `data` (a mapping, or the shorthand string). Returns (config, problems); the
    config is usable only if there are no problems. `ctx` is handed to every `check(ctx)` on the way."""
    problems: list[str] = []
    obj = _coerce(cls, data, path, where, problems, ctx)
    return obj, problems


def field_help(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for every field of a config class: for `posttrain stages` listings."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


def to_dict(obj: Any) -> Any:
    """A config back to plain data (for hashing and the manifest)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
