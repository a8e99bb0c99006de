"""Imports point one way (STYLE.md rule 12): foundation -> rewards -> data_gen -> evaluation/training -> stages ->
recipe -> cli. Read with `ast`, so nothing is imported: every `import` of one of our modules, at the top of a file
or inside a function, must name a module of the same floor or a lower one, and no modules may import each other in
a circle (a lazy import inside a function counts too: it is a circle all the same). Imports of third-party
libraries (torch, trl, vllm) and plugins found through a registry are not our modules and are not checked."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("posttrain", "rewards", "data_gen")

# (floor, module prefixes); the first matching prefix, longest first, decides a module's floor.
FLOORS = [
    (0, ("posttrain", "posttrain.errors", "posttrain.registry", "posttrain.config", "posttrain.files")),
    (0, ("posttrain.model", "posttrain.generation")),
    (1, ("rewards",)),
    (2, ("data_gen",)),
    (3, ("posttrain.evaluation", "posttrain.training", "posttrain.grpo_sampling")),
    (4, ("posttrain.stages",)),
    (5, ("posttrain.recipe",)),
    (6, ("posttrain.cli", "posttrain.report", "rewards.cli")),
]
NAMES = ["foundation", "rewards", "data_gen", "evaluation/training", "stages", "recipe", "cli"]


def floor_of(module: str) -> int:
    best, best_len = None, -1
    for floor, prefixes in FLOORS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = floor, len(prefix)
    assert best is not None, f"module {module} has no floor in tests/test_layers.py: add it to FLOORS"
    return best


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module of ours, line) for every import in the file, at its top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            # `from pkg import submodule` names the submodule; `from pkg import attr` names pkg
            subs = [f"{names[0]}.{a.name}" for a in node.names]
            names = [s for s in subs if s in KNOWN] if all(s in KNOWN for s in subs) else names
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.append((name, node.lineno))
    return found


KNOWN = modules()


def _known(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_imports_point_one_way():
    known = modules()
    climbs, seen = [], set()
    for module, path in known.items():
        here = floor_of(module)
        for name, line in imports(module, path):
            target = _known(name, known)
            if target is None:
                continue
            there = floor_of(target)
            if there > here and (rel := path.relative_to(ROOT)) and f"{rel}:{line}" not in seen:
                seen.add(f"{rel}:{line}")
                rel = path.relative_to(ROOT)
                climbs.append(f"{rel}:{line}: {module} ({NAMES[here]}) imports {target} ({NAMES[there]})")
    assert not climbs, "imports that climb a floor:\n" + "\n".join(climbs)


def test_no_import_cycles():
    known = modules()
    graph = {m: set() for m in known}
    for module, path in known.items():
        for name, _ in imports(module, path):
            target = _known(name, known)
            if target and target != module:
                graph[module].add(target)
    cycles = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycle = stack[stack.index(node) :]
            start = cycle.index(min(cycle))  # one rotation per cycle
            cycle = cycle[start:] + cycle[:start]
            cycles.add(" -> ".join([*cycle, cycle[0]]))
            return
        for nxt in graph[node]:
            visit(nxt, [*stack, node])

    for module in graph:
        visit(module, [])
    assert not cycles, "modules that import each other:\n" + "\n".join(sorted(cycles))
