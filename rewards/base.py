"""The reward contract: registration, what a reward declares, and the text helpers every reward shares.

`REWARDS` is the registry; `@reward("name", kind=...)` registers a function in it. `describe_reward(obj)` reads a
reward's declaration from its signature (see the package docstring): its settings with defaults and types, and the
dataset columns it needs. That is all `posttrain validate` and `posttrain rewards list` use, so neither imports a
model. A class can be a reward too: its `__init__` keyword arguments are the settings and its instances are called
like a function. `RewardFunction` is the plugin contract as a Protocol; `Reward` is what scoring code (evaluation,
rejection sampling, GRPO) needs of a configured set of rewards, which `rewards.combine.CombinedReward` provides.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from posttrain.errors import UserError
from posttrain.registry import Registry

REWARDS: Registry = Registry(
    "reward",
    "posttrain.rewards",
    modules=(
        "rewards.math_reward",
        "rewards.code_reward",
        "rewards.think_format",
        "rewards.length",
        "rewards.repetition",
        "rewards.language",
        "rewards.reward_model",
        "rewards.llm_judge",
        "rewards.embedding_match",
    ),
)

# Names TRL passes to every reward function besides the dataset columns; never "missing" from a dataset.
TRAINER_PROVIDED = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)

Columns = tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]]


class RewardError(UserError):
    """A reward raised on a row, or returned something that is not one score per completion."""


class RewardFunction(Protocol):
    """A reward plugin, called as TRL calls its `reward_funcs`: one score per completion, None = not applicable."""

    __name__: str

    def __call__(self, completions: list, **columns: Any) -> list[float | None]: ...


class Reward(Protocol):
    """A configured set of weighted rewards, as scoring code uses it (`rewards.combine.CombinedReward`)."""

    weights: list[float]

    @property
    def names(self) -> list[str]: ...

    def per_reward(self, completions: list, **columns: Any) -> dict[str, list[float | None]]: ...

    def total(self, scores: dict[str, list[float | None]]) -> list[float | None]: ...

    def metrics(self, reset: bool = True) -> dict[str, float]: ...

    def reset_metrics(self) -> None: ...


@dataclass(frozen=True)
class Param:
    """One setting of a reward: its name, default (`inspect.Parameter.empty` when it must be given) and type hint."""

    name: str
    default: Any
    annotation: Any = Any

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def describe(self) -> str:
        """'name=default' as it would be written in YAML, or 'name (required)'."""
        if self.required:
            return f"{self.name} (required)"
        yaml_words = {None: "null", True: "true", False: "false"}
        default = self.default
        shown = yaml_words[default] if isinstance(default, (bool, type(None))) else repr(default)
        return f"{self.name}={shown}"


@dataclass(frozen=True)
class RewardInfo:
    """What a reward declares. `columns(params)` lists the dataset columns it needs; 'a|b' means either one."""

    kind: str
    params: dict[str, Param]
    column_spec: Columns = ()
    optional_columns: tuple[str, ...] = ()
    is_class: bool = False
    accepts_any_column: bool = True
    accepted_columns: frozenset[str] = field(default_factory=frozenset)
    validate: Callable[[dict[str, Any]], list[str]] | None = None
    summary: str = ""

    def columns(self, params: dict[str, Any] | None = None) -> tuple[str, ...]:
        if callable(self.column_spec):
            merged = {name: p.default for name, p in self.params.items() if not p.required}
            merged.update(params or {})
            return tuple(self.column_spec(merged))
        return tuple(self.column_spec)


def reward(
    name: str,
    *,
    kind: Literal["rule", "model"] = "rule",
    columns: Columns | None = None,
    validate: Callable[[dict[str, Any]], list[str]] | None = None,
):
    """Register a reward function in `REWARDS` under `name`.

    Args:
        name: the short name used in recipes (`{name: math}`).
        kind: "rule" (a verifier, cheap) or "model" (loads weights on first call).
        columns: the dataset columns it needs, when the signature cannot say it ('tests|test' means either one), or
            a function of the settings returning them (a column needed only in one mode).
        validate: a function of the settings (defaults filled in) returning problems, one line each, for the checks
            a type hint cannot express (`timeout_s` must be > 0).
    """

    def wrap(fn):
        fn.reward_kind = kind
        if columns is not None:
            fn.required_columns = columns
        if validate is not None:
            fn.validate_params = validate
        return REWARDS.register(name)(fn)

    return wrap


def _type_hints(fn) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # a third-party annotation we cannot resolve: skip type checks rather than fail
        return {}


def describe_reward(obj) -> RewardInfo:
    """Read a reward's declaration (kind, settings, columns) from its signature and attributes; loads nothing."""
    is_class = inspect.isclass(obj)
    settings_fn = obj.__init__ if is_class else obj
    call_fn = obj.__call__ if is_class else obj
    settings_sig = inspect.signature(settings_fn)
    call_sig = inspect.signature(call_fn)
    hints = _type_hints(settings_fn)
    kinds = (inspect.Parameter.KEYWORD_ONLY,)
    if is_class:
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = {
        p.name: Param(p.name, p.default, hints.get(p.name, Any))
        for p in settings_sig.parameters.values()
        if p.kind in kinds and p.name != "self"
    }
    call_params = [p for p in call_sig.parameters.values() if p.name != "self"]
    column_params = [p for p in call_params[1:] if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD]
    required = tuple(p.name for p in column_params if p.default is inspect.Parameter.empty)
    required = tuple(c for c in required if c not in TRAINER_PROVIDED)
    optional = tuple(p.name for p in column_params if p.default is not inspect.Parameter.empty)
    doc = inspect.getdoc(obj) or ""
    return RewardInfo(
        kind=getattr(obj, "reward_kind", "rule"),
        params=params,
        column_spec=getattr(obj, "required_columns", required),
        optional_columns=optional,
        is_class=is_class,
        accepts_any_column=any(p.kind == inspect.Parameter.VAR_KEYWORD for p in call_params),
        accepted_columns=frozenset(p.name for p in call_params[1:]),
        validate=getattr(obj, "validate_params", None),
        summary=doc.split("\n\n")[0].replace("\n", " "),
    )


def completion_text(completion: str | list[dict] | dict | None) -> str:
    """The text of one completion: a string as is, or the assistant contents of a chat message list joined."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion:
        if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
            content = message.get("content") or ""
            if isinstance(content, list):  # multimodal content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(str(content))
    return "\n".join(parts)


def completion_texts(completions: Sequence) -> list[str]:
    return [completion_text(c) for c in completions]


def split_think(text: str, open_tag: str = "<think>", close_tag: str = "</think>") -> tuple[str, str]:
    """Split a response into (reasoning, answer) at the last `close_tag`; no tag means no reasoning."""
    head, sep, tail = text.rpartition(close_tag)
    if not sep:
        return "", text
    return head.split(open_tag, 1)[-1], tail


def final_answer_text(text: str) -> str:
    """The part of a response after its reasoning (after the last `</think>`), or all of it."""
    return split_think(text)[1]


def row_value(values: Any, index: int, num_rows: int) -> Any:
    """Row `index` of a column passed as a per-row list; None when the column is absent or not per-row."""
    if isinstance(values, (list, tuple)) and len(values) == num_rows:
        return values[index]
    return None


def prompt_messages(prompt: str | list[dict] | None) -> list[dict]:
    """A prompt as chat messages: a string becomes one user message."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]
