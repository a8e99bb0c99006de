"""Recipe file -> one typed, reference-resolved `Recipe`, with every problem reported at once.

Steps: read the YAML keeping each key's line; apply command-line overrides (`stages.sft.max_steps=20`,
`model=/path`); check the top-level fields and each stage's `name` and `type`; resolve `${model}`-style references
to top-level fields and `${stages.NAME.OUTPUT}` references to the output paths of earlier stages; order stages by
their references (cycles are errors); build each stage's typed config. All problems are collected and raised
together as one `ConfigError`, each line naming the file and line, the stage and the field.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posttrain.config import CheckContext, parse, to_dict
from posttrain.errors import ConfigError, did_you_mean, one_of
from posttrain.recipe.gates import GateConfig, check_gate_stages
from posttrain.trackers import check_report_to

REF = re.compile(r"\$\{([^}]+)\}")
# Names become folder names and `stages.NAME.x` references: no dots, slashes or '..', and short.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
NAME_RULE = "use letters, digits, _ and - (no dots or slashes), at most 64 characters"
TOP_LEVEL = {
    "name": "recipe name; runs go to <run_dir>/<name>/ (default: the file's stem)",
    "description": "free text",
    "model": "default model of every stage: 'embedded', 'tiny', a local folder or a hub id",
    "run_dir": "where runs are written (default: runs)",
    "seed": "default seed",
    "report_to": "experiment trackers for every stage: tensorboard, trackio, wandb, mlflow (a name or a list; none)",
    "keep_checkpoints": "keep a training stage's checkpoints once it has finished (default false: they are resume "
    "state, about 3 GB per stage for the embedded model with its optimizer, and are deleted after the manifest)",
    "stages": "the list of stages",
}


@dataclass
class StageSpec:
    name: str
    type: str
    config: Any
    deps: list[str]
    stage_class: type
    line: int | None = None
    gate: GateConfig | None = None  # a condition on earlier stages' metrics (posttrain.recipe.gates)

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)


@dataclass
class Recipe:
    name: str
    path: str
    model: str
    run_dir: Path
    seed: int
    stages: list[StageSpec] = field(default_factory=list)
    description: str = ""
    report_to: list[str] = field(default_factory=list)  # trackers every stage logs to
    keep_checkpoints: bool = False  # a finished training stage's checkpoints/ stay (else deleted after its manifest)
    warnings: list[str] = field(default_factory=list)  # settings that are set but ignored, one line each

    @property
    def root(self) -> Path:
        return self.run_dir / self.name

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise ConfigError(f"no stage '{name}' in {self.path}{did_you_mean(name, self.stage_names)}")

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _line_map(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out[(*path, i)] = value.start_mark.line + 1
            _line_map(value, (*path, i), out)
    return out


# A recipe is a page of YAML: these bounds are far above any real one and far below what hurts. Aliases (&a / *a)
# can make a tiny file stand for billions of values ("billion laughs"); every later walk would expand them.
MAX_VALUES = 100_000
MAX_DEPTH = 64
MAX_SEED = 2**32 - 1  # numpy's seeds (datasets shuffling) stop here


class _TooDeep(Exception):
    def __init__(self, node: yaml.Node):
        self.node = node


def _check_nodes(node: yaml.Node, path: str) -> list[str]:
    """Problems a YAML node graph has before anything walks it: too many values once aliases are expanded, nesting
    too deep, and duplicate keys (the last one would silently win), each naming its lines."""
    sizes: dict[int, int] = {}
    problems: list[str] = []

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooDeep(n)
        if id(n) in sizes:  # an alias: the same node again; counted again, but computed once
            return sizes[id(n)]
        total = 1
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in n.value:
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode) and key.value in seen and key.value != "<<":
                    problems.append(
                        f"{path}:{line}: key '{key.value}' appears twice in one mapping (lines {seen[key.value]} and "
                        f"{line}); the second would silently replace the first: keep one"
                    )
                seen.setdefault(key.value, line) if isinstance(key, yaml.ScalarNode) else None
                total += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(n, yaml.SequenceNode):
            total += sum(size(v, depth + 1) for v in n.value)
        sizes[id(n)] = total
        return total

    try:
        total = size(node, 0)
    except _TooDeep as e:
        return [f"{path}:{e.node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep; a recipe is flat"]
    if total > MAX_VALUES:
        return [
            f"{path}: stands for {total:,} values once its YAML aliases (&name / *name) are expanded (the limit is "
            f"{MAX_VALUES:,}); a recipe this size is almost surely an alias bomb: remove the nested aliases"
        ]
    return problems


def read_yaml(path: str) -> tuple[dict, dict[tuple, int]]:
    """Read a recipe file; raise ConfigError for a missing or unreadable file, text that is not UTF-8, a syntax
    error (with line and column), duplicate keys, deep nesting or an alias bomb."""
    p = Path(path)
    if not p.is_file():
        hint = " (it is a folder)" if p.is_dir() else ""
        raise ConfigError(
            f"recipe file '{path}' not found{hint}; the shipped recipes are in recipes/, e.g. recipes/sft.yaml"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e}); check its permissions") from None
    try:
        node = yaml.compose(text)
        problems = _check_nodes(node, path) if node is not None else []
        if problems:
            raise ConfigError(problems)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: YAML syntax error: {problem}; fix the syntax at that line") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply for a recipe (more than {MAX_DEPTH} levels)") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a recipe is a mapping with 'name', 'model' and 'stages'; got {type(data).__name__}"
        )
    return data, (_line_map(node) if node is not None else {})


def _unshared(value: Any) -> Any:
    """A copy of loaded YAML in which no dict or list appears twice (copy.deepcopy would keep aliases shared)."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def _list_index(item: str, parts: list[str], part: str, items: list) -> int:
    """The list index `part` of an override (`stages.rl.rewards.0.model=...`), checked against the list's length."""
    if not part.isdigit() or int(part) >= len(items):
        raise ValueError(
            f"override '{item}': '{'.'.join(parts[:-1]) or 'the stage'}' is a list of {len(items)}; address an entry "
            f"by its index, 0 to {len(items) - 1} (got '{part}')"
        )
    return int(part)


def apply_overrides(data: dict, overrides: list[str], path: str) -> None:
    """Apply `a.b.c=value` overrides in place; `stages.NAME.x` addresses the stage called NAME. Values are YAML."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"override '{item}': write it as key=value, e.g. stages.sft.max_steps=20")
            continue
        parts = key.split(".")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or "not valid YAML"
            problems.append(f"override '{item}': the value is not valid YAML ({problem}); quote it, e.g. {key}='...'")
            continue
        target: Any = data
        if parts[0] == "stages" and len(parts) >= 3:
            stages = data.get("stages") or []
            names = [s.get("name") for s in stages if isinstance(s, dict)]
            if parts[1] not in names:
                problems.append(
                    f"override '{item}': {path} has no stage '{parts[1]}'{did_you_mean(parts[1], names)}; "
                    f"stages are {one_of(n for n in names if n)}"
                )
                continue
            target, parts = stages[names.index(parts[1])], parts[2:]
        try:
            for depth, part in enumerate(parts[:-1]):
                if isinstance(target, list):
                    target = target[_list_index(item, parts[: depth + 1], part, target)]
                    continue
                if not isinstance(target.get(part), (dict, list)):
                    target[part] = {} if target.get(part) is None else {"source": target[part]}
                target = target[part]
            if isinstance(target, list):
                target[_list_index(item, parts, parts[-1], target)] = value
            else:
                target[parts[-1]] = value
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(problems)


def _stage_refs(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, str):
        for expr in REF.findall(value):
            parts = expr.strip().split(".")
            if parts[0] == "stages" and len(parts) >= 2:
                found.add(parts[1])
    elif isinstance(value, dict):
        for v in value.values():
            found |= _stage_refs(v)
    elif isinstance(value, list):
        for v in value:
            found |= _stage_refs(v)
    return found


def _gate_stages(gate: Any) -> set[str]:
    """The stages a raw `gate:` mapping reads (for ordering; the gate is checked properly later)."""
    if not isinstance(gate, dict):
        return set()
    return {str(v).split("/", 1)[0] for k, v in gate.items() if k in ("metric", "baseline") and isinstance(v, str)}


def _order(raw_stages: list[dict], deps: dict[str, set[str]], path: str) -> tuple[list[str], list[str]]:
    """Stable topological order (declared order where free). Returns (order, problems)."""
    names = [s["name"] for s in raw_stages]
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    problems: list[str] = []

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = chain[chain.index(name) :] + [name]
            problems.append(f"{path}: stages form a reference cycle: {' -> '.join(cycle)}; break one reference")
            return
        state[name] = 1
        for dep in sorted(deps.get(name, ()), key=names.index):
            visit(dep, [*chain, name])
        state[name] = 2
        order.append(name)

    for name in names:
        visit(name, [])
    return order, problems


def _lookup(expr: str, top: dict, outputs: dict[str, dict[str, str]], problems: list[str], where: str) -> Any:
    parts = expr.strip().split(".")
    if parts[0] == "stages":
        if len(parts) != 3:
            problems.append(f"{where}reference '${{{expr}}}' must be written ${{stages.NAME.OUTPUT}}")
            return None
        name, out = parts[1], parts[2]
        if name not in outputs:
            problems.append(
                f"{where}reference '${{{expr}}}' names unknown stage '{name}'{did_you_mean(name, outputs)}; "
                f"stages are {one_of(outputs)}"
            )
            return None
        if out not in outputs[name]:
            problems.append(
                f"{where}reference '${{{expr}}}': stage '{name}' has no output '{out}'"
                f"{did_you_mean(out, outputs[name])}; its outputs are {one_of(outputs[name])}"
            )
            return None
        return outputs[name][out]
    if len(parts) == 1 and parts[0] in top and parts[0] != "stages":
        return top[parts[0]]
    problems.append(
        f"{where}unknown reference '${{{expr}}}'; use ${{model}}, ${{seed}}, ${{name}} or ${{stages.NAME.OUTPUT}}"
    )
    return None


def _resolve(value: Any, top: dict, outputs: dict, problems: list[str], where: str) -> Any:
    if isinstance(value, str):
        whole = REF.fullmatch(value.strip())
        if whole:  # a lone reference keeps the referenced value's type (`seed: ${seed}` stays an int)
            return _lookup(whole.group(1), top, outputs, problems, where)
        return REF.sub(lambda m: str(_lookup(m.group(1), top, outputs, problems, where)), value)
    if isinstance(value, dict):
        return {k: _resolve(v, top, outputs, problems, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, top, outputs, problems, where) for v in value]
    return value


def _where_factory(path: str, lines: dict[tuple, int], prefix: tuple, label: str):
    def where(sub: tuple) -> str:
        full = (*prefix, *sub)
        for n in range(len(full), -1, -1):
            if full[:n] in lines:
                return f"{path}:{lines[full[:n]]}: {label}"
        return f"{path}: {label}"

    return where


def _check_stage_heads(raw_stages: Any, path: str, lines: dict, problems: list[str]) -> list[tuple[int, dict]]:
    """Check each stage's name and type; return (index, raw) of the stages that can be parsed further."""
    from posttrain.stages.base import STAGES

    if not isinstance(raw_stages, list) or not raw_stages:
        problems.append(f"{path}: 'stages' must be a non-empty list of stages, each with a name and a type")
        return []
    good, seen = [], set()
    for i, raw in enumerate(raw_stages):
        where = _where_factory(path, lines, ("stages", i), f"stages[{i}]: ")
        if not isinstance(raw, dict):
            problems.append(f"{where(())}a stage is a mapping with 'name' and 'type', got {raw!r}")
            continue
        name, kind = raw.get("name"), raw.get("type")
        ok = True
        if not isinstance(name, str) or not NAME_RE.match(name):
            shown = name if not isinstance(name, str) or len(name) <= 40 else name[:37] + "..."
            problems.append(f"{where(('name',))}name: missing or invalid ({shown!r}); {NAME_RULE}")
            ok = False
        elif name in seen:
            problems.append(f"{where(('name',))}name: stage name '{name}' is used twice; names must be unique")
            ok = False
        seen.add(name)
        if kind is None:
            problems.append(f"{where(())}type: missing; valid stage types are {one_of(STAGES.names())}")
            ok = False
        elif not isinstance(kind, str) or STAGES.get_or_none(kind) is None:
            problems.append(
                f"{where(('type',))}type: unknown stage type {kind!r}{did_you_mean(str(kind), STAGES.names())}; "
                f"valid stage types are {one_of(STAGES.names())}"
            )
            ok = False
        if ok:
            good.append((i, raw))
    return good


def load_recipe(path: str, overrides: list[str] | tuple = (), run_dir: str | None = None) -> Recipe:
    """Read, override, check and resolve a recipe. Raises ConfigError listing every problem found."""
    from posttrain.model.loading import check_model_spec
    from posttrain.stages.base import STAGES

    data, lines = read_yaml(path)
    if overrides:
        # YAML aliases (`*judge`) load as one shared object; an override of one stage's copy must not change the others.
        data = _unshared(data)
    apply_overrides(data, list(overrides), path)
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL:
            problems.append(
                f"{path}:{lines.get((key,), '?')}: unknown top-level field '{key}'{did_you_mean(str(key), TOP_LEVEL)}; "
                f"valid fields are {one_of(TOP_LEVEL)}"
            )
    top = {
        "name": data.get("name") or Path(path).stem,
        "model": data.get("model") or "embedded",
        "run_dir": run_dir or data.get("run_dir") or "runs",
        "seed": data.get("seed", 0),
    }
    for key, kind in (("name", str), ("model", str), ("run_dir", str), ("seed", int)):
        if not isinstance(top[key], kind) or (kind is int and isinstance(top[key], bool)):
            problems.append(f"{path}:{lines.get((key,), '?')}: {key}: expected {kind.__name__}, got {top[key]!r}")
    if isinstance(top["name"], str) and not NAME_RE.match(top["name"]):
        problems.append(f"{path}: name: '{top['name'][:40]}' is not a valid recipe name; {NAME_RULE}")
    if isinstance(top["seed"], int) and not 0 <= top["seed"] <= MAX_SEED:
        problems.append(f"{path}:{lines.get(('seed',), '?')}: seed: must be in [0, {MAX_SEED}], got {top['seed']}")
    keep_checkpoints = data.get("keep_checkpoints", False)
    if not isinstance(keep_checkpoints, bool):
        problems.append(
            f"{path}:{lines.get(('keep_checkpoints',), '?')}: keep_checkpoints: expected true or false, "
            f"got {keep_checkpoints!r}"
        )
        keep_checkpoints = False
    report_to = data.get("report_to") or []
    report_to = [report_to] if isinstance(report_to, str) else report_to
    if not isinstance(report_to, list) or not all(isinstance(r, str) for r in report_to):
        problems.append(f"{path}:{lines.get(('report_to',), '?')}: report_to: a tracker name or a list of them")
        report_to = []
    report_to = [r for r in report_to if r != "none"]
    problems += [f"{path}:{lines.get(('report_to',), '?')}: {p}" for p in check_report_to(report_to)]
    root = Path(str(top["run_dir"])) / str(top["name"])
    heads = _check_stage_heads(data.get("stages"), path, lines, problems)
    classes = {raw["name"]: STAGES.get(raw["type"]) for _, raw in heads}
    outputs = {n: {o: str(root / n / rel) for o, rel in cls.outputs.items()} for n, cls in classes.items()}
    deps = {raw["name"]: _stage_refs({k: v for k, v in raw.items() if k != "gate"}) for _, raw in heads}
    gate_deps = {raw["name"]: _gate_stages(raw.get("gate")) - {raw["name"]} for _, raw in heads}
    order_deps = {k: (v | gate_deps[k]) & set(classes) for k, v in deps.items()}  # a gate runs after what it reads
    order, cycle_problems = _order([raw for _, raw in heads], order_deps, path)
    problems += cycle_problems
    by_name = {raw["name"]: (i, raw) for i, raw in heads}
    specs, warnings = [], []
    # Paths the recipe's stages will write: checks skip them, since they do not exist before the run.
    ctx = CheckContext(tuple(p for outs in outputs.values() for p in outs.values()))
    for name in order if not cycle_problems else []:
        i, raw = by_name[name]
        cls = classes[name]
        where = _where_factory(path, lines, ("stages", i), f"stage '{name}': ")
        body = {k: v for k, v in raw.items() if k not in ("name", "type", "gate")}
        gate = None
        if raw.get("gate") is not None:
            gate, gate_problems = parse(GateConfig, raw["gate"], where, ("gate",))
            gate_problems += [f"{where(('gate',))}{p}" for p in check_gate_stages(gate, name, list(classes))]
            problems += gate_problems
            gate = None if gate_problems else gate
        for f in dataclasses.fields(cls.config_class):
            if isinstance(f.default, str) and "${" in f.default and f.name not in body:
                body[f.name] = f.default
        resolved = _resolve(body, top, outputs, problems, where(()))
        config, stage_problems = parse(cls.config_class, resolved, where, ctx=ctx)
        problems += stage_problems
        model = getattr(config, "model", None)
        if isinstance(model, str) and not ctx.is_pending(model) and not stage_problems:
            problem = check_model_spec(model)
            if problem:
                problems.append(f"{where(('model',))}model: {problem}")
        specs.append(StageSpec(name, raw["type"], config, sorted(deps[name]), cls, lines.get(("stages", i)), gate))
        ignored = getattr(config, "ignored", None)
        if callable(ignored) and not stage_problems:
            warnings += [f"{where((line.split(':')[0],))}{line}" for line in ignored()]
    if problems:
        raise ConfigError(problems)
    return Recipe(
        name=top["name"],
        path=path,
        model=top["model"],
        run_dir=Path(top["run_dir"]),
        seed=top["seed"],
        stages=specs,
        description=str(data.get("description", "")),
        warnings=warnings,
        report_to=report_to,
        keep_checkpoints=keep_checkpoints,
    )
