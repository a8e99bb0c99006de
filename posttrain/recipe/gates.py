"""Eval gates: a stage runs only if an earlier stage's eval says the chain is going the right way.

    - name: rl
      type: grpo
      gate: {metric: sft/eval_loss_end, max: 2.5}                  # an absolute ceiling
      gate: {metric: eval_expert/pass@1, baseline: eval_base/pass@1, min_delta: 0.0}   # no worse than the base
      gate: {metric: math_expert_rl/eval_end/reward/total, min_delta: 0.02}           # its own before -> after

`metric` is `STAGE/KEY`: a key of that stage's manifest metrics. With `min_delta` and no `baseline`, a key written
`eval_end/X` or `X_end` is compared with its `eval_start/X` or `X_start`. The gated stage runs after the stages its
gate reads. A failed gate stops the run before the gated stage with one line naming the metric, its value and the
threshold; `posttrain run --ignore-gates` runs on regardless (and says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from posttrain.errors import UserError, did_you_mean, one_of


@dataclass
class GateConfig:
    """A condition on earlier stages' metrics that a stage needs before it runs."""

    metric: str = field(metadata={"help": "STAGE/KEY: a manifest metric of an earlier stage, e.g. eval_sft/pass@1"})
    min: float | None = field(default=None, metadata={"help": "the metric must be at least this"})
    max: float | None = field(default=None, metadata={"help": "the metric must be at most this (losses)"})
    baseline: str | None = field(default=None, metadata={"help": "STAGE/KEY to compare with, for min_delta"})
    min_delta: float | None = field(
        default=None,
        metadata={"help": "metric - baseline must be at least this (baseline: the metric's own start by default)"},
    )

    def check(self) -> list[str]:
        problems = []
        if self.min is None and self.max is None and self.min_delta is None:
            problems.append("gate: give at least one of min, max or min_delta")
        for name in ("metric", "baseline"):
            value = getattr(self, name)
            if value is not None and "/" not in value:
                problems.append(f"gate.{name}: '{value}' is not STAGE/KEY, e.g. eval_sft/pass@1")
        return problems

    def stages(self) -> list[str]:
        return [ref.split("/", 1)[0] for ref in (self.metric, self.baseline) if ref]


def check_gate_stages(gate: GateConfig, name: str, stage_names: list[str]) -> list[str]:
    """The gate's stages exist and are not the gated stage itself."""
    problems = []
    for stage in gate.stages():
        if stage == name:
            problems.append(f"gate: a stage cannot gate on its own metrics ('{stage}'); name an earlier stage")
        elif stage not in stage_names:
            problems.append(
                f"gate: no stage '{stage}'{did_you_mean(stage, stage_names)}; stages are {one_of(stage_names)}"
            )
    return problems


def _start_key(key: str) -> str | None:
    if key.startswith("eval_end/"):
        return "eval_start/" + key[len("eval_end/") :]
    if key.endswith("_end"):
        return key[: -len("_end")] + "_start"
    return None


def _value(ref: str, manifests: dict[str, dict[str, Any]]) -> float:
    stage, key = ref.split("/", 1)
    metrics = (manifests.get(stage) or {}).get("metrics") or {}
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        numeric = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        raise UserError(
            f"gate metric '{ref}': stage '{stage}' recorded no number '{key}'{did_you_mean(key, numeric)}; "
            f"its metrics are {one_of(numeric[:30]) or 'none'}"
        )
    return float(value)


def gate_failure(gate: GateConfig, manifests: dict[str, dict[str, Any]]) -> str | None:
    """Why the gate fails given the finished stages' manifests (name -> manifest), or None when it passes."""
    value = _value(gate.metric, manifests)
    if gate.min is not None and value < gate.min:
        return f"{gate.metric} = {value:.4g} is below the floor {gate.min:g}"
    if gate.max is not None and value > gate.max:
        return f"{gate.metric} = {value:.4g} is above the ceiling {gate.max:g}"
    if gate.min_delta is not None:
        stage, key = gate.metric.split("/", 1)
        baseline = gate.baseline or (f"{stage}/{_start_key(key)}" if _start_key(key) else None)
        if baseline is None:
            raise UserError(f"gate on '{gate.metric}': min_delta needs a baseline (gate.baseline: STAGE/KEY)")
        delta = value - _value(baseline, manifests)
        if delta < gate.min_delta:
            return f"{gate.metric} - {baseline} = {delta:+.4g} is below min_delta {gate.min_delta:g}"
    return None
