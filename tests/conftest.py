"""Shared fixtures. `echo` is a test-only stage type: it writes numbered shards, skipping those already written
(so it resumes), and can crash after a given shard. It lets runner tests exercise caching, invalidation and resume
in milliseconds; the real stages have their own tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from posttrain.stages.base import STAGES, StageContext

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class EchoConfig:
    value: int = field(default=0, metadata={"help": "written into every shard"})
    input: str | None = field(default=None, metadata={"help": "an upstream output folder to read", "input": True})
    num_shards: int = field(default=3, metadata={"help": "shards to write"})
    fail_after: int | None = field(default=None, metadata={"help": "raise after writing this many shards"})
    model: str = field(default="${model}", metadata={"help": "model (only checked)"})

    def check(self) -> list[str]:
        return [f"num_shards: must be positive, got {self.num_shards}"] if self.num_shards <= 0 else []


@STAGES.register("echo")
class EchoStage:
    config_class = EchoConfig
    outputs = {"dataset": "data", "model": "data"}

    def __init__(self, config: EchoConfig, ctx: StageContext):
        self.cfg, self.ctx = config, ctx

    def run(self) -> dict:
        out = self.ctx.path("data")
        out.mkdir(parents=True, exist_ok=True)
        upstream = sorted(Path(self.cfg.input).glob("shard-*")) if self.cfg.input else []
        written = 0
        for i in range(self.cfg.num_shards):
            shard = out / f"shard-{i}"
            if shard.exists():
                continue
            shard.write_text(f"{self.cfg.value} {len(upstream)}")
            written += 1
            with (self.ctx.stage_dir.parent / "events.log").open("a") as f:
                f.write(f"{self.ctx.name} {i}\n")
            if self.cfg.fail_after is not None and i + 1 >= self.cfg.fail_after:
                raise RuntimeError("simulated crash")
        return {"shards_written": written}


@pytest.fixture
def write_recipe(tmp_path):
    def write(text: str, name: str = "recipe.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture(scope="session")
def tiny_path() -> str:
    from posttrain.model.loading import tiny_path

    return str(tiny_path())


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine: one intra-op thread is several times faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_weights(a: Path, b: Path, atol: float) -> float:
    """Two saved model folders hold the same weights within `atol` (max abs difference); returns that difference."""
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst <= atol, f"weights differ by {worst} (tolerance {atol})"
    return worst


def kill_run_after(recipe: str, runs: Path, marker: Path, timeout_s: float = 240) -> bool:
    """Start `posttrain run RECIPE` in its own process group, wait until `marker` exists (or the timeout), then
    SIGKILL the whole group, as a crash or `kill -9` would. Returns whether `marker` appeared; a run that exits
    before it fails the test with the end of its output."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "posttrain.cli", "run", recipe, "--run-dir", str(runs), "--no-progress"]
    log = Path(recipe).with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if proc.poll() is not None and not marker.exists():
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the run exited with {proc.returncode} before {marker} appeared:\n{tail}")
        with contextlib.suppress(ProcessLookupError):  # it finished right after the marker appeared
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return marker.exists()
