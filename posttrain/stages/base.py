"""The stage contract shared by every stage type.

A stage type is a class registered with `@STAGES.register("<type>")` (its `type` in YAML equals its file name in
`posttrain/stages/`). It declares:
- `config_class`: a dataclass of its typed config (fields with `metadata={"help": ...}`); the recipe schema turns
  the YAML mapping into it, reporting unknown keys and wrong types. An optional `check(self) -> list[str]` method
  on the config returns cross-field problems as "field: message" lines, without loading weights.
- `outputs`: output name -> path relative to the stage directory. `${stages.NAME.OUTPUT}` resolves to it.

Lifecycle: the config's `check()` validates when the recipe is loaded (`posttrain validate` runs it too, before any
weights load); `__init__(config, ctx)` only stores its arguments; `run()` does the work through library functions that never see the
whole recipe and returns a flat metrics summary for the manifest. The runner writes `manifest.json` afterwards;
a stage never writes it. A stage must be resumable: whatever it finds in `ctx.stage_dir` from an interrupted run
with the same config is either completed work it keeps or partial work it discards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from posttrain.registry import Registry

STAGES: Registry[type[Stage]] = Registry("stage type", "posttrain.stages", modules=("posttrain.stages",))


def bf16_field() -> Any:
    """The `bf16` setting of every training stage (`bool | Literal["auto"]`; `posttrain.training.resolve_bf16`)."""
    help_text = "bf16 autocast, fp32 master weights; auto: on where the device has bf16 (a GPU, AVX-512 BF16)"
    return field(default=False, metadata={"help": help_text})


@dataclass
class StageContext:
    """What the runner tells a stage about where it runs."""

    name: str
    recipe: str
    stage_dir: Path
    show_progress: bool = True
    report_to: tuple[str, ...] = ()  # the recipe's trackers (training stages hand them to TRL)

    def path(self, output: str) -> Path:
        return self.stage_dir / output


class Stage(Protocol):
    """`version` (optional, default 1) is part of the cache key: bump it when the same config would write other
    outputs, so runs of the older code re-run instead of being reused."""

    config_class: ClassVar[type]
    outputs: ClassVar[dict[str, str]]

    def __init__(self, config: Any, ctx: StageContext) -> None: ...

    def run(self) -> dict[str, Any]: ...
