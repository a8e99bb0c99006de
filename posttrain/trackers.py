"""Experiment trackers: one tracker run per stage, grouped under the recipe, for every stage type.

A recipe's `report_to:` (tensorboard, trackio, wandb, mlflow; none by default) names the trackers. Training stages
log live through TRL's own integrations (`training_report_args` gives the TrainingArguments for that: the project,
the run name, TensorBoard's folder in the stage directory). After any stage finishes, `log_stage` replays what the
stage wrote to `metrics.jsonl` (for the stages TRL does not drive: generation, eval, mix) and its manifest summary
(eval before/after, acceptance per filter) into the same tracker run. Everything works offline: TensorBoard event
files in `<stage>/tensorboard`, trackio's local store (`TRACKIO_DIR`), `WANDB_MODE=offline`, MLflow's local
`mlruns/`. A tracker whose package is missing is a validation error naming the install command.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TRACKERS = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "trackio": ("trackio", "pip install trackio"),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow"),
}


def check_report_to(names: Sequence[str]) -> list[str]:
    """Problems with a `report_to` list: unknown trackers and trackers whose package is not installed."""
    problems = []
    for name in names:
        if name not in TRACKERS:
            problems.append(f"report_to: unknown tracker '{name}'; use {', '.join(TRACKERS)} or none")
        elif importlib.util.find_spec(TRACKERS[name][0]) is None:
            problems.append(f"report_to: {name} is not installed; install it with `{TRACKERS[name][1]}`")
    return problems


def training_report_args(report_to: Sequence[str], project: str, run_name: str, stage_dir: Path) -> dict[str, Any]:
    """TrainingArguments fields (and environment) that send a TRL trainer's logs to the recipe's trackers."""
    if not report_to:
        return {"report_to": "none"}
    if "tensorboard" in report_to:  # the only way to place TRL's TensorBoard folder; read when the trainer starts
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(stage_dir / "tensorboard")
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_PROJECT", project)
        os.environ["WANDB_RUN_GROUP"] = project
    if "mlflow" in report_to:
        os.environ["MLFLOW_EXPERIMENT_NAME"] = project
    # trackio_static_space_id=False: no snapshot Space on the Hub at the end (offline machines, private data).
    return {"report_to": list(report_to), "project": project, "run_name": run_name, "trackio_static_space_id": False}


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or key in ("step", "time"):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class _TensorBoard:
    def __init__(self, project: str, run_name: str, stage_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(stage_dir / "tensorboard"), filename_suffix=".posttrain")

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _Trackio:
    def __init__(self, project: str, run_name: str, stage_dir: Path):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=project, name=run_name, group=project, resume="allow", embed=False)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


class _Wandb:
    def __init__(self, project: str, run_name: str, stage_dir: Path):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", project), group=project, name=run_name)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class _Mlflow:
    def __init__(self, project: str, run_name: str, stage_dir: Path):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(project)
        self.run = mlflow.start_run(run_name=run_name)

    def log(self, step: int, values: dict[str, float]) -> None:
        clean = {k.replace("@", "_at_"): v for k, v in values.items()}  # MLflow refuses '@' in metric names
        self.mlflow.log_metrics(clean, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


BACKENDS = {"tensorboard": _TensorBoard, "trackio": _Trackio, "wandb": _Wandb, "mlflow": _Mlflow}


def log_stage(
    report_to: Sequence[str],
    project: str,
    run_name: str,
    stage_dir: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    trained: bool,
) -> None:
    """Send a finished stage's per-step rows and its summary to every tracker, in one tracker run per stage.

    Args:
        rows: the stage's metrics.jsonl rows; for a training stage (`trained`) TRL logged them live, so they are not
            sent again.
        summary: the manifest's metrics, logged once under `summary/` at the last step.
    """
    if not report_to:
        return
    if trained:
        rows = []
    last = max([int(r.get("step") or 0) for r in rows] or [0])
    for name in report_to:
        tracker = BACKENDS[name](project, run_name, stage_dir)
        try:
            for row in rows:
                values = _numbers(row)
                if values:
                    tracker.log(int(row.get("step") or 0), values)
            values = {f"summary/{k}": v for k, v in _numbers(summary).items()}
            if values:
                tracker.log(last, values)
        finally:
            tracker.close()
