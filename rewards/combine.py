"""Checking reward entries from a recipe and combining them into one weighted reward.

`check_reward_specs` reports every problem in a `rewards:` list at once (unknown names with a did-you-mean, unknown
or ill-typed settings, missing dataset columns) without loading any weights; `posttrain validate` calls it.
`build_reward` turns the list into a `CombinedReward`: called directly it is one TRL reward function returning the
weighted sum (`None` where every reward is `None`), `funcs` + `weights` are what TRL's `reward_funcs` and
`reward_weights` take, and `per_reward` gives each reward's scores for rejection-sampling filters. Each reward keeps
its own running metrics (mean, std, fraction `None`, seconds), read and reset by `metrics()`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from posttrain.errors import ConfigError, did_you_mean, one_of
from rewards import REWARDS
from rewards.base import TRAINER_PROVIDED, RewardError, RewardInfo, check_value, describe_reward

RESERVED_KEYS = ("name", "weight", "on_error")
ON_ERROR = ("raise", "skip")


def _entry(spec: Any) -> Any:
    return {"name": spec} if isinstance(spec, str) else spec


def check_reward_specs(specs: Sequence[dict | str], columns: set[str] | None = None, where: str = "") -> list[str]:
    """Check reward entries from a recipe; return the problems, one line each, naming where they are.

    Args:
        specs: the YAML list, entries like `{name: code, timeout_s: 5, weight: 1.0}` (a bare name is allowed).
        columns: the dataset's columns, to check each reward's required ones; None skips that check.
        where: the location prefix, e.g. "recipes/x.yaml: stage 'rl'".
    Returns:
        A list of problems; empty when every entry is valid. Nothing is loaded but the reward's module.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(specs, (list, tuple)):
        return [f"{prefix}rewards: expected a list of entries like {{name: math, weight: 1.0}}, got {specs!r}"]
    problems: list[str] = []
    for i, spec in enumerate(specs):
        at = f"{prefix}rewards[{i}]"
        spec = _entry(spec)
        if not isinstance(spec, dict):
            problems.append(f"{at}: expected a mapping like {{name: math, weight: 1.0}}, got {spec!r}")
            continue
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{at}.name: missing; every reward entry needs a name, e.g. {{name: math}}")
            continue
        try:
            obj = REWARDS.get(name)
        except ConfigError as e:
            problems.extend(f"{at}.name: {p}" for p in e.problems)
            continue
        if not callable(obj):
            problems.append(f"{at}.name: '{name}' resolves to {obj!r}, which is not callable")
            continue
        problems.extend(_check_entry(describe_reward(obj), spec, columns, at, name))
    return problems


def _check_entry(info: RewardInfo, spec: dict, columns: set[str] | None, at: str, name: str) -> list[str]:
    problems = []
    weight = spec.get("weight", 1.0)
    if check_value(weight, float) or not math.isfinite(weight):
        problems.append(f"{at}.weight: expected a finite number, got {weight!r}")
    if spec.get("on_error", "raise") not in ON_ERROR:
        problems.append(f"{at}.on_error: expected {one_of(ON_ERROR)}, got {spec['on_error']!r}")
    params = {k: v for k, v in spec.items() if k not in RESERVED_KEYS}
    for key, value in params.items():
        if key not in info.params:
            settings = one_of(info.params) if info.params else "none"
            problems.append(
                f"{at}.{key}: unknown setting of reward '{name}'{did_you_mean(key, info.params)}; its settings are "
                f"{settings} (and {one_of(RESERVED_KEYS)} for every reward)"
            )
            continue
        expected = check_value(value, info.params[key].annotation)
        if expected:
            problems.append(f"{at}.{key}: expected {expected}, got {value!r}")
    for param in info.params.values():
        if param.required and param.name not in params:
            problems.append(f"{at}: reward '{name}' needs the setting '{param.name}' (add {param.name}: ... to it)")
    if problems:
        return problems
    if info.validate is not None:
        merged = {n: p.default for n, p in info.params.items() if not p.required} | params
        problems.extend(f"{at}.{line}" for line in info.validate(merged))
    if columns is not None:
        available = set(columns) | TRAINER_PROVIDED
        for needed in info.columns(params):
            options = needed.split("|")
            if not any(option in available for option in options):
                wanted = " or ".join(f"'{o}'" for o in options)
                problems.append(
                    f"{at} ({name}): needs the dataset column {wanted}; the data has {one_of(columns) or 'none'}"
                )
    return problems


class BoundReward:
    """One configured reward: calls the plugin with its settings, checks its output and keeps its metrics."""

    def __init__(self, name: str, fn: Callable, params: dict[str, Any], info: RewardInfo, on_error: str = "raise"):
        self.__name__ = name
        self.fn = fn
        self.params = params
        self.info = info
        self.on_error = on_error
        self.reset_metrics()

    def __repr__(self) -> str:
        return f"BoundReward({self.__name__!r}, params={self.params!r})"

    def reset_metrics(self) -> None:
        self._values: list[float] = []
        self._num_none = 0
        self._num_errors = 0
        self._seconds = 0.0

    def _select(self, columns: dict[str, Any]) -> dict[str, Any]:
        if self.info.accepts_any_column:
            return columns
        return {k: v for k, v in columns.items() if k in self.info.accepted_columns}

    def __call__(self, completions: list, **columns) -> list[float | None]:
        start = time.perf_counter()
        kwargs = self._select(columns)
        try:
            values = self._coerce(self.fn(completions, **kwargs, **self.params), len(completions))
        except RewardError:
            raise
        except Exception as batch_error:  # find the row(s) that raise, so the error can name one
            values = self._row_by_row(completions, kwargs, batch_error)
        self._seconds += time.perf_counter() - start
        for v in values:
            if v is None:
                self._num_none += 1
            else:
                self._values.append(v)
        return values

    def _row_by_row(self, completions: list, kwargs: dict[str, Any], batch_error: Exception) -> list[float | None]:
        n = len(completions)
        values: list[float | None] = []
        for i in range(n):
            row = {k: [v[i]] if isinstance(v, (list, tuple)) and len(v) == n else v for k, v in kwargs.items()}
            try:
                values.extend(self._coerce(self.fn([completions[i]], **row, **self.params), 1))
            except RewardError:
                raise
            except Exception as e:
                if self.on_error != "skip":
                    raise RewardError(
                        f"reward '{self.__name__}' failed on row {i}: {type(e).__name__}: {e} "
                        "(set on_error: skip on its entry to score such rows None instead)"
                    ) from e
                self._num_errors += 1
                values.append(None)
        if self._num_errors == 0 and self.on_error != "skip":
            raise RewardError(
                f"reward '{self.__name__}' failed on a batch of {n} rows but on no single row: "
                f"{type(batch_error).__name__}: {batch_error}"
            ) from batch_error
        return values

    def _coerce(self, out: Any, n: int) -> list[float | None]:
        if hasattr(out, "tolist"):  # numpy array or torch tensor
            out = out.tolist()
        if not isinstance(out, (list, tuple)) or len(out) != n:
            got = f"{len(out)} values" if isinstance(out, (list, tuple)) else repr(out)[:80]
            raise RewardError(f"reward '{self.__name__}' must return one score per completion ({n}); got {got}")
        values: list[float | None] = []
        for i, v in enumerate(out):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                values.append(None)
            elif isinstance(v, (bool, int, float)):
                values.append(float(v))
            else:
                raise RewardError(f"reward '{self.__name__}' returned {v!r} for row {i}; expected a number or None")
        return values

    def metrics(self, reset: bool = True) -> dict[str, float]:
        num_rows = len(self._values) + self._num_none
        mean = sum(self._values) / len(self._values) if self._values else float("nan")
        var = sum((v - mean) ** 2 for v in self._values) / len(self._values) if self._values else float("nan")
        out = {
            f"{self.__name__}/mean": mean,
            f"{self.__name__}/std": math.sqrt(var),
            f"{self.__name__}/frac_none": self._num_none / num_rows if num_rows else float("nan"),
            f"{self.__name__}/seconds": self._seconds,
        }
        if self.on_error == "skip":
            out[f"{self.__name__}/num_errors"] = float(self._num_errors)
        if reset:
            self.reset_metrics()
        return out


class CombinedReward:
    """A weighted sum of configured rewards; one object for GRPO and rejection sampling."""

    __name__ = "combined_reward"

    def __init__(self, funcs: list[BoundReward], weights: list[float]):
        assert len(funcs) == len(weights)
        self.funcs = funcs
        self.weights = weights

    @property
    def names(self) -> list[str]:
        return [f.__name__ for f in self.funcs]

    def __repr__(self) -> str:
        return "CombinedReward(" + ", ".join(f"{f.__name__}*{w:g}" for f, w in zip(self.funcs, self.weights)) + ")"

    def per_reward(self, completions: list, **columns) -> dict[str, list[float | None]]:
        """Each reward's scores, by name, in the order of the recipe."""
        return {f.__name__: f(completions, **columns) for f in self.funcs}

    def total(self, scores: dict[str, list[float | None]]) -> list[float | None]:
        """The weighted sum of `per_reward` output; `None` rewards are skipped, all-`None` rows stay `None`."""
        columns = [scores[f.__name__] for f in self.funcs]
        out: list[float | None] = []
        for row in zip(*columns):
            terms = [w * v for w, v in zip(self.weights, row) if v is not None]
            out.append(sum(terms) if terms else None)
        return out

    def __call__(self, completions: list, **columns) -> list[float | None]:
        return self.total(self.per_reward(completions, **columns))

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Per reward: mean, std, frac_none and seconds over the calls since the last reset."""
        out: dict[str, float] = {}
        for f in self.funcs:
            out.update(f.metrics(reset=reset))
        return out

    def reset_metrics(self) -> None:
        for f in self.funcs:
            f.reset_metrics()


def reward_names(specs: Sequence[dict | str]) -> list[str]:
    """The names `build_reward` gives its rewards (and their metrics and scores): a dotted path is named by its last
    part, and a repeated name gets a suffix (`math`, `math_2`)."""
    names, seen = [], {}
    for spec in map(_entry, specs):
        name = spec.get("name") if isinstance(spec, dict) else None
        short = str(name).rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        seen[short] = seen.get(short, 0) + 1
        names.append(short if seen[short] == 1 else f"{short}_{seen[short]}")
    return names


def check_reward_choice(field: str, value: str | None, specs: Sequence[dict | str]) -> list[str]:
    """A config field naming one of the configured rewards (`verifier`, `pass_reward`): the problem, if any."""
    names = reward_names(specs)
    if value is None or value in names:
        return []
    return [f"{field}: '{value}' is not one of the rewards {names}{did_you_mean(value, names)}"]


def build_reward(specs: Sequence[dict | str], where: str = "") -> CombinedReward:
    """Build one `CombinedReward` from recipe entries `{name, weight?, on_error?, **settings}`.

    Raises:
        ConfigError: with every problem `check_reward_specs` finds (columns are not checked here).
    """
    problems = check_reward_specs(specs, None, where)
    if problems:
        raise ConfigError(problems)
    funcs, weights = [], []
    for spec, unique in zip(map(_entry, specs), reward_names(specs)):
        name = spec["name"]
        obj = REWARDS.get(name)
        info = describe_reward(obj)
        params = {k: v for k, v in spec.items() if k not in RESERVED_KEYS}
        fn, call_params = (obj(**params), {}) if info.is_class else (obj, params)
        funcs.append(BoundReward(unique, fn, call_params, info, spec.get("on_error", "raise")))
        weights.append(float(spec.get("weight", 1.0)))
    return CombinedReward(funcs, weights)
