"""Generation cut into shards that are committed one by one: what the `eval` stage runs on a Ray executor or under
a multi-process launch.

Shard k holds prompts [k * shard_size, (k + 1) * shard_size) and is sampled with `seed + k * shard_size * n`, a seed
of its own, so its samples do not depend on which process or Ray worker drew it. Each finished shard is written to
`<folder>/part-0000k.json` (through a temporary file and an atomic rename): a rerun keeps the shards it finds and
draws the others, so a killed eval resumes. With a `RayPool` the driver commits every shard; under a launcher
(`share=(rank, world)`) every rank draws and commits the shards k with k % world == rank and rank 0 waits for the
rest.

    samples = generate_shards(prompts, Path("runs/x/eval/generated"), sampling=dict(n=4, ...), generator=gen)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.generation.base import Messages, Sample


def _name(k: int) -> str:
    return f"part-{k:05d}.json"


def _read(path: Path, num_prompts: int) -> list[list[Sample]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, list) or len(data) != num_prompts:
        return None
    return [[Sample(*s) for s in per_prompt] for per_prompt in data]


def _write(path: Path, samples: list[list[Sample]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps([[[s.text, s.num_tokens, s.finish_reason] for s in p] for p in samples]))
    os.replace(tmp, path)


def generate_task(generator: Any, task: tuple[list[Messages], dict[str, Any]]) -> list[list[Sample]]:
    """On a Ray worker (whose state is the generator): one shard's samples."""
    prompts, sampling = task
    return generator.generate(prompts, **sampling)


def generate_shards(
    prompts: Sequence[Messages],
    folder: Path,
    *,
    sampling: dict[str, Any],
    seed: int = 0,
    shard_size: int = 64,
    generator: Any = None,
    pool: Any = None,
    share: tuple[int, int] = (0, 1),
    wait_timeout_s: float = 24 * 3600,
) -> list[list[Sample]] | None:
    """Samples for every prompt, shard by shard (see the module docstring); `sampling` holds n, temperature,
    top_p, max_tokens and stop. Returns them in prompt order; on a rank other than 0, None once its own are done."""
    rank, world = share
    num_shards = -(-len(prompts) // shard_size)
    n = sampling["n"]

    def bounds(k: int) -> tuple[int, int]:
        return k * shard_size, min(len(prompts), (k + 1) * shard_size)

    def committed(k: int) -> list[list[Sample]] | None:
        lo, hi = bounds(k)
        return _read(folder / _name(k), hi - lo)

    def task(k: int) -> tuple[list[Messages], dict[str, Any]]:
        lo, hi = bounds(k)
        return list(prompts[lo:hi]), {**sampling, "seed": seed + k * shard_size * n}

    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob("part-*.json.tmp*"):
        if world == 1 or int(tmp.name.split(".")[0].split("-")[1]) % world == rank:
            tmp.unlink(missing_ok=True)
    done = {k: s for k in range(num_shards) if (s := committed(k)) is not None}
    todo = [k for k in range(num_shards) if k not in done and k % world == rank]
    if pool is not None:
        for k, samples in pool.map_in_order(generate_task, todo, task):
            _write(folder / _name(k), samples)
            done[k] = samples
    else:
        for k in todo:
            prompts_k, sampling_k = task(k)
            done[k] = generator.generate(prompts_k, **sampling_k)
            _write(folder / _name(k), done[k])
    if rank != 0:
        return None
    deadline = time.time() + wait_timeout_s
    while len(done) < num_shards:  # the other ranks' shards
        for k in range(num_shards):
            if k not in done and (s := committed(k)) is not None:
                done[k] = s
        if len(done) < num_shards:
            if time.time() > deadline:
                missing = sorted(set(range(num_shards)) - set(done))
                raise RuntimeError(f"{folder}: waited {wait_timeout_s:.0f}s for the other ranks' shards {missing}")
            time.sleep(0.5)
    return [per_prompt for k in range(num_shards) for per_prompt in done[k]]
