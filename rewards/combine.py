"""Combining configured rewards into one weighted reward.

`build_reward` turns a `rewards:` list (typed `RewardEntry` objects from a recipe, or plain mappings and names from a
notebook) into a `CombinedReward`: called directly it is one TRL reward function returning the weighted sum (`None`
where every reward is `None`), `funcs` + `weights` are what TRL's `reward_funcs` and `reward_weights` take, and
`per_reward` gives each reward's scores for rejection-sampling filters. Each reward keeps its own running metrics
(mean, std, fraction `None`, seconds), read and reset by `metrics()`. Entries are checked by `rewards.entries`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from posttrain.errors import ConfigError
from rewards.base import REWARDS, RewardError, RewardInfo, describe_reward
from rewards.entries import RewardEntry, parse_entries, reward_names


class BoundReward:
    """One configured reward: calls the plugin with its settings, checks its output and keeps its metrics."""

    def __init__(
        self,
        name: str,
        fn: Callable,
        params: dict[str, Any],
        info: RewardInfo,
        on_error: str = "raise",
        domains: list[str] | None = None,
    ):
        self.__name__ = name
        self.fn = fn
        self.params = params
        self.info = info
        self.on_error = on_error
        self.domains = set(domains) if domains else None  # rows of other domains score None without a call
        self.reset_metrics()

    def __repr__(self) -> str:
        return f"BoundReward({self.__name__!r}, params={self.params!r})"

    def reset_metrics(self) -> None:
        self._values: list[float] = []
        self._by_domain: dict[str, list[float]] = {}
        self._num_none = 0
        self._num_errors = 0
        self._seconds = 0.0

    def _select(self, columns: dict[str, Any]) -> dict[str, Any]:
        if self.info.accepts_any_column:
            return columns
        return {k: v for k, v in columns.items() if k in self.info.accepted_columns}

    def __call__(self, completions: list, **columns) -> list[float | None]:
        domain = columns.get("domain")
        if self.domains is not None:
            return self._routed(completions, columns, domain)
        start = time.perf_counter()
        kwargs = self._select(columns)
        try:
            values = self._coerce(self.fn(completions, **kwargs, **self.params), len(completions))
        except RewardError:
            raise
        except Exception as batch_error:  # find the row(s) that raise, so the error can name one
            values = self._row_by_row(completions, kwargs, batch_error)
        self._seconds += time.perf_counter() - start
        domains = domain if isinstance(domain, (list, tuple)) and len(domain) == len(values) else [None] * len(values)
        for v, d in zip(values, domains):
            if v is None:
                self._num_none += 1
            else:
                self._values.append(v)
                if d is not None:
                    self._by_domain.setdefault(str(d), []).append(v)
        return values

    def _routed(self, completions: list, columns: dict[str, Any], domain: Any) -> list[float | None]:
        """Score only the rows of `self.domains`; the others are None (not applicable), counted as such."""
        n = len(completions)
        if not isinstance(domain, (list, tuple)) or len(domain) != n:
            raise RewardError(
                f"reward '{self.__name__}' scores domains {sorted(self.domains)}, but the rows have no 'domain' "
                "column; tag each source with `domain: ...`"
            )
        rows = [i for i, d in enumerate(domain) if d in self.domains]
        subset = {
            k: [v[i] for i in rows] if isinstance(v, (list, tuple)) and len(v) == n else v for k, v in columns.items()
        }
        inner, self.domains = self.domains, None  # score the subset as an ordinary call (metrics included)
        try:
            scored = self([completions[i] for i in rows], **subset) if rows else []
        finally:
            self.domains = inner
        out: list[float | None] = [None] * n
        for i, v in zip(rows, scored):
            out[i] = v
        self._num_none += n - len(rows)
        return out

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
        for d, values in sorted(self._by_domain.items()):
            if len({*self._by_domain}) > 1 or self.domains is not None:
                out[f"{self.__name__}/domain/{d}/mean"] = sum(values) / len(values)
        if reset:
            self.reset_metrics()
        return out


class CombinedReward:
    """A weighted sum of configured rewards; one object for GRPO and rejection sampling."""

    __name__ = "combined_reward"

    def __init__(self, funcs: list[BoundReward], weights: list[float]):
        assert len(funcs) == len(weights)  # built together by build_reward
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


def build_reward(specs: Sequence[RewardEntry | dict | str], where: str = "") -> CombinedReward:
    """Build one `CombinedReward` from entries `{name, weight?, on_error?, **settings}` (or parsed `RewardEntry`s).

    Raises:
        ConfigError: with every problem the entries have (columns are not checked here).
    """
    entries, problems = parse_entries(specs, where)
    if problems:
        raise ConfigError(problems)
    funcs, weights = [], []
    for entry, unique in zip(entries, reward_names(entries)):
        obj = REWARDS.get(entry.name)
        info = describe_reward(obj)
        params = entry.settings()
        fn, call_params = (obj(**params), {}) if info.is_class else (obj, params)
        funcs.append(BoundReward(unique, fn, call_params, info, entry.on_error, entry.domains))
        weights.append(float(entry.weight))
    return CombinedReward(funcs, weights)
