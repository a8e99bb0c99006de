"""Where a generation stage's shards run: in this process (`kind: local`) or on Ray actors (`kind: ray`).

`ExecutorConfig` is the `executor:` setting of the `rejection_sampling` and `eval` stages:

    executor: {kind: ray, num_workers: 4, resources_per_worker: {GPU: 1}, address: auto}

With `kind: ray` every worker is a Ray actor owning one generator, built as the stage builds its own
(`make_generator`); the driver hands out shards and commits each finished one (`posttrain.generation.ray_pool`).
Under `accelerate launch` / torchrun (WORLD_SIZE > 1) every rank takes its share of the shards instead
(`rank_share`). Ray is optional (`pip install 'posttrain[ray]'`) and imported only when a Ray executor starts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Literal

RAY_INSTALL = "pip install 'posttrain[ray]'"


def ray_importable() -> bool:
    return importlib.util.find_spec("ray") is not None


@dataclass
class ExecutorConfig:
    """How a generation stage spreads its shards. In YAML a mapping or just the kind (`executor: ray`)."""

    __shorthand__ = "kind"

    kind: Literal["local", "ray"] = field(
        default="local", metadata={"help": "local (this process; its rank's share under a launcher) or ray (actors)"}
    )
    num_workers: int = field(default=1, metadata={"help": "ray: actors, each owning one generator (engine)"})
    address: str | None = field(
        default=None,
        metadata={"help": "ray: null starts a local cluster; auto or host:port or ray://host:port joins one"},
    )
    resources_per_worker: dict[str, float] = field(
        default_factory=lambda: {"CPU": 1},
        metadata={"help": "ray: what each actor reserves: CPU, GPU (tensor_parallel_size GPUs for vLLM), custom"},
    )
    max_retries: int = field(
        default=2, metadata={"help": "ray: times a shard is redone on a new actor after its worker died"}
    )

    def check(self) -> list[str]:
        problems = []
        if self.kind == "ray" and not ray_importable():
            problems.append(f"kind: ray is not installed; run `{RAY_INSTALL}` or use kind: local")
        if self.num_workers < 1:
            problems.append(f"num_workers: must be at least 1, got {self.num_workers}")
        if self.max_retries < 0:
            problems.append(f"max_retries: must be >= 0, got {self.max_retries}")
        for name, amount in self.resources_per_worker.items():
            if amount < 0:
                problems.append(f"resources_per_worker.{name}: must be >= 0, got {amount}")
        if self.address is not None and not self.address.strip():
            problems.append("address: empty; use null (a local cluster), auto, or host:port")
        if self.kind == "local" and (self.num_workers != 1 or self.address is not None):
            problems.append("kind: num_workers and address are settings of kind: ray; set kind: ray or drop them")
        return problems


def rank_share() -> tuple[int, int]:
    """(rank, world size) of this process under `accelerate launch` / torchrun; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), max(1, int(os.environ.get("WORLD_SIZE", "1")))


@contextlib.contextmanager
def rank_device(tensor_parallel_size: int = 1):
    """Under a multi-process launch on GPUs, show a generator's child process (vLLM runs in one) only this rank's
    GPU: otherwise every rank's engine would start on GPU 0. A no-op in a plain process, on CPU, or for
    tensor-parallel engines (give those a Ray executor)."""
    local = os.environ.get("LOCAL_RANK")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if local is None or rank_share()[1] == 1 or tensor_parallel_size != 1:
        yield
        return
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # no CUDA build
        count = 0
    devices = visible.split(",") if visible else [str(i) for i in range(count)]
    if int(local) >= len(devices):
        yield
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[int(local)]
    try:
        yield
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


def worker_options(config: ExecutorConfig) -> dict[str, Any]:
    """`ray.remote` options from `resources_per_worker`: CPU and GPU as num_cpus / num_gpus, the rest custom."""
    res = dict(config.resources_per_worker)
    options: dict[str, Any] = {"num_cpus": res.pop("CPU", 1), "num_gpus": res.pop("GPU", 0)}
    if res:
        options["resources"] = res
    return options
