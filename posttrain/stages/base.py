"""The stage contract shared by every stage type.

A stage type is a class registered with `@STAGES.register("<type>")` (its `type` in YAML equals its file name in
`posttrain/stages/`). It declares:
- `config_class`: a dataclass of its typed config (fields with `metadata={"help": ...}`); the recipe schema turns
  the YAML mapping into it, reporting unknown keys and wrong types. An optional `check(self) -> list[str]` method
  on the config returns cross-field problems as "field: message" lines, without loading weights.
- `outputs`: output name -> path relative to the stage directory. `${stages.NAME.OUTPUT}` resolves to it.

Lifecycle: `__init__(config, ctx)` validates, `run()` does the work through library functions that never see the
whole recipe and returns a flat metrics summary for the manifest. The runner writes `manifest.json` afterwards;
a stage never writes it. A stage must be resumable: whatever it finds in `ctx.stage_dir` from an interrupted run
with the same config is either completed work it keeps or partial work it discards.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from posttrain.registry import Registry

STAGES: Registry[type[Stage]] = Registry("stage type", "posttrain.stages", modules=("posttrain.stages",))


@dataclass
class StageContext:
    """What the runner tells a stage about where it runs."""

    name: str
    recipe: str
    stage_dir: Path
    show_progress: bool = True

    def path(self, output: str) -> Path:
        return self.stage_dir / output


class Stage(Protocol):
    config_class: ClassVar[type]
    outputs: ClassVar[dict[str, str]]

    def __init__(self, config: Any, ctx: StageContext) -> None: ...

    def run(self) -> dict[str, Any]: ...


class MetricsLogger:
    """Appends one JSON object per step to a JSONL file (`metrics.jsonl` in the stage directory), flushed per line
    so that a killed run keeps every step it logged. `posttrain report` plots these files."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, **values: Any) -> None:
        row = {"step": step, "time": round(time.time(), 3), **values}
        # Opened per row (rows are seconds apart): nothing stays buffered when the process is killed.
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
