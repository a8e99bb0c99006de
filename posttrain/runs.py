"""What a run folder says happened: its stages, their order, status, timing, evals and headline results.

A run folder (`runs/<recipe>`) holds one folder per stage; a finished stage has a `manifest.json`. `read_run` turns
the folder into a `RunInfo`: stages in the order they ran (dependencies from the manifests' inputs), each with its
status (done, unfinished), wall time, before -> after pairs of every eval it made (`eval_pairs`: keys written as
`eval_start/X` and `eval_end/X`, or `X_start` and `X_end`) and one headline line. `posttrain report`, `posttrain
runs`, `posttrain compare` and the end-of-run table all read runs through here, so they agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.files import read_json

# The few numbers that say whether a stage of each type did its job, in the order they are shown.
HEADLINE_KEYS = {
    "eval": ("pass@1", "reward/total", "mean_tokens"),
    "rejection_sampling": ("acceptance", "kept", "type/r1", "type/original"),
    "mix": ("num_rows", "num_input"),
    "sft": ("train_loss", "steps"),
    "grpo": ("train_loss", "steps"),
}


@dataclass
class StageInfo:
    name: str
    folder: Path
    manifest: dict[str, Any] | None
    deps: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return str(self.manifest.get("type", "?")) if self.manifest else "?"

    @property
    def status(self) -> str:
        if self.manifest is None:
            return "unfinished"
        return "resumed" if self.manifest.get("resumed") else "done"

    @property
    def wall_time_s(self) -> float | None:
        return self.manifest.get("wall_time_s") if self.manifest else None

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics") or {}) if self.manifest else {}

    def evals(self) -> list[tuple[str, Any, Any]]:
        return eval_pairs(self.metrics)

    def headline(self) -> str:
        """One line: every eval's before -> after, else the type's key numbers."""
        pairs = self.evals()
        if pairs:
            shown = [(k, a, b) for k, a, b in pairs if "/" not in k or k.startswith(("reward/total", "pass@1"))]
            return ", ".join(f"{k} {fmt(a)} -> {fmt(b)}" for k, a, b in (shown or pairs)[:3])
        metrics = self.metrics
        keys = [k for k in HEADLINE_KEYS.get(self.type, ()) if k in metrics]
        return ", ".join(f"{k}={fmt(metrics[k])}" for k in keys)


@dataclass
class RunInfo:
    folder: Path
    stages: list[StageInfo]

    def stage(self, name: str) -> StageInfo | None:
        return next((s for s in self.stages if s.name == name), None)


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def eval_pairs(metrics: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, before, after) for every eval a stage recorded before and after its work."""
    pairs = []
    for key, before in metrics.items():
        if key.startswith("eval_start/"):
            name, other = key[len("eval_start/") :], "eval_end/" + key[len("eval_start/") :]
        elif key.endswith("_start"):
            name, other = key[: -len("_start")], key[: -len("_start")] + "_end"
        else:
            continue
        if other in metrics and isinstance(before, (int, float)) and not isinstance(before, bool):
            pairs.append((name, before, metrics[other]))
    return pairs


def _order(stages: dict[str, StageInfo]) -> list[StageInfo]:
    """Dependencies first, then by start time."""

    def start(s: StageInfo) -> str:
        m = s.manifest or {}
        unix = m.get("started_unix")  # sub-second: two quick evals often start within one second
        if isinstance(unix, (int, float)):
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(unix)) + f"{unix % 1:.3f}"[1:]
        return str(m.get("started_at", "~"))

    started = {n: start(s) for n, s in stages.items()}
    done: list[str] = []

    def visit(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in done or name in seen or name not in stages:
            return
        for dep in sorted(stages[name].deps, key=lambda d: started.get(d, "~")):
            visit(dep, (*seen, name))
        done.append(name)

    for name in sorted(stages, key=lambda n: (started[n], n)):
        visit(name)
    return [stages[n] for n in done]


def read_run(folder: str | Path) -> RunInfo:
    """Read a run folder. Raises UserError when it holds no stage folder."""
    folder = Path(folder)
    dirs = [p for p in sorted(folder.iterdir()) if p.is_dir() and p.name != "report"] if folder.is_dir() else []
    if not dirs:
        raise UserError(f"'{folder}' holds no stage folders; pass a run folder such as runs/<recipe>")
    stages = {}
    for path in dirs:
        manifest = read_json(path / "manifest.json")
        manifest = manifest if isinstance(manifest, dict) and "type" in manifest else None
        inputs = (manifest or {}).get("inputs") or {}
        deps = [k.split(":", 1)[1] for k in inputs if k.startswith("stage:")]
        stages[path.name] = StageInfo(path.name, path, manifest, deps)
    return RunInfo(folder, _order(stages))


def list_runs(run_dir: str | Path) -> list[RunInfo]:
    """Every run folder under a run directory (folders holding at least one stage folder with a manifest)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"run directory '{root}' does not exist; runs are written to runs/ (or --run-dir)")
    runs = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if any((d / "manifest.json").is_file() or (d / ".state.json").is_file() for d in path.iterdir() if d.is_dir()):
            runs.append(read_run(path))
    return runs


def eval_values(run: RunInfo) -> dict[tuple[str, str], Any]:
    """(stage, metric) -> value for every eval a run recorded: the eval stages' metrics, and each training stage's
    before and after values (`metric (before)`, `metric`)."""
    out: dict[tuple[str, str], Any] = {}
    for stage in run.stages:
        for key, before, after in stage.evals():
            out[(stage.name, f"{key} (before)")] = before
            out[(stage.name, key)] = after
        if stage.type == "eval":
            for key, value in stage.metrics.items():
                if key.startswith(("pass@", "reward/")) or key in ("mean_tokens", "repetition", "truncated"):
                    out[(stage.name, key)] = value
    return out


def compare_runs(a: RunInfo, b: RunInfo) -> list[tuple[str, str, Any, Any, Any]]:
    """(stage, metric, value in a, value in b, b - a) for every eval either run recorded."""
    va, vb = eval_values(a), eval_values(b)
    rows = []
    for key in dict.fromkeys([*va, *vb]):
        x, y = va.get(key), vb.get(key)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        rows.append((key[0], key[1], x, y, (y - x) if numbers else None))
    return rows


def run_summary(run: RunInfo) -> tuple[str, str, str, str]:
    """(name, its stages with their status, last finished, headline of its evals) for `posttrain runs`."""
    done = [s for s in run.stages if s.manifest]
    finished = max((str(s.manifest.get("finished_at", "")) for s in done), default="")
    stages = ", ".join(s.name if s.manifest else f"{s.name} (unfinished)" for s in run.stages)
    evals = [f"{s.name}: {s.headline()}" for s in run.stages if s.evals() or s.type == "eval"]
    return run.folder.name, f"{len(done)}/{len(run.stages)} done: {stages}", finished, "; ".join(evals)


CHAIN_COLUMNS = ("pass@1", "reward/total", "mean_tokens", "repetition")


def chain_table(run: RunInfo) -> tuple[list[str], list[str], dict[tuple[str, str], tuple[Any, Any]]]:
    """The evals of a chained run as (points, columns, cells): a row per eval point (`point:` of the eval stages, in
    run order: base, each expert, SFT, GRPO), a column per domain and measure (`math pass@1`, `chat reward/total`,
    `math mean_tokens`...), and each cell (value, stderr or None)."""
    points: list[str] = []
    columns: list[str] = []
    cells: dict[tuple[str, str], tuple[Any, Any]] = {}
    for stage in run.stages:
        m = stage.metrics
        if stage.type != "eval" or not m.get("point"):
            continue
        point, domain = str(m["point"]), str(m.get("domain") or stage.name)
        points += [point] if point not in points else []
        for measure in CHAIN_COLUMNS:
            if measure in m:
                column = f"{domain} {measure}"
                columns += [column] if column not in columns else []
                cells[(point, column)] = (m[measure], m.get(f"{measure}_stderr"))
    return points, columns, cells
