"""One registry mechanism for stages, rewards and generation backends.

A plugin is found by, in order: a short name registered with the `register` decorator in our packages, a name
published by a third-party package under the entry-point group (`posttrain.rewards`, `posttrain.stages`, ...), or
a dotted path `pkg.module:attr` as the escape hatch. An unknown name raises a `ConfigError` that lists the valid
names and suggests the closest one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from posttrain.errors import ConfigError, did_you_mean, one_of

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> plugin. `modules` are imported lazily on first lookup so that registration by decorator happens."""

    def __init__(self, kind: str, group: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self.group = group
        self._modules = modules
        self._items: dict[str, T] = {}
        self._entry_points: dict = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REWARDS.register("math")`. Re-registering a name with a different object is an error."""

        def wrap(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice: {existing!r} and {obj!r}")
            self._items[name] = obj
            return obj

        return wrap

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            importlib.import_module(module)
        # Third-party entry points are imported only when their name is looked up, so one broken plugin cannot
        # break every other lookup.
        self._entry_points = {ep.name: ep for ep in entry_points(group=self.group) if ep.name not in self._items}

    def _load_entry_point(self, name: str) -> T | None:
        ep = self._entry_points.pop(name, None)
        if ep is None:
            return None
        try:
            self._items[name] = ep.load()
        except Exception as e:  # a third-party import can fail in any way
            raise ConfigError(f"{self.kind} '{name}' from entry point '{ep.value}' failed to import: {e}") from None
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted({*self._items, *self._entry_points})

    def items(self) -> list[tuple[str, T]]:
        """Every plugin, importing entry points; a broken one is skipped with a warning."""
        import warnings

        self._load()
        for name in list(self._entry_points):
            try:
                self._load_entry_point(name)
            except ConfigError as e:
                warnings.warn(str(e), stacklevel=2)
        return sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        return self.get_or_none(name) is not None

    def get_or_none(self, name: str) -> T | None:
        self._load()
        if name in self._items:
            return self._items[name]
        if name in self._entry_points:
            try:
                return self._load_entry_point(name)
            except ConfigError:
                return None
        if ":" in name:
            try:
                return load_dotted(name)
            except ConfigError:
                return None
        return None

    def get(self, name: str) -> T:
        """Look up a plugin by short name or dotted path; raise a ConfigError naming the valid set otherwise."""
        self._load()
        if name in self._items:
            return self._items[name]
        if name in self._entry_points:
            return self._load_entry_point(name)
        if ":" in name:
            return load_dotted(name)
        names = self.names()
        raise ConfigError(
            f"unknown {self.kind} '{name}'{did_you_mean(name, names)}; valid {self.kind}s are "
            f"{one_of(names)}, an entry point in group '{self.group}', or a dotted path 'pkg.module:name'"
        )


def load_dotted(path: str):
    """Import `pkg.module:attr` (attr may be dotted). Raise ConfigError with the reason when it fails."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"'{path}' is not a dotted path; write it as 'pkg.module:name'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import module '{module_name}' for '{path}': {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module '{module_name}' has no attribute '{attr}' (from '{path}')")
        obj = getattr(obj, part)
    return obj
