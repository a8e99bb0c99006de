"""Benchmark: rejection sampling on Ray workers against one process and against bare generation, side by side in
one run (transformers backend, the embedded model, CPU).

    python benchmarks/ray_generation.py [--prompts 32] [--n 2] [--max-tokens 64] [--shard-size 8] [--rounds 2]

The same prompts (reasoning-gym chain_sum with the stage's R1 system prompt) and sampling settings go through:
- bare transformers: batched `model.generate` in this process, batches of one shard's sequences;
- local: `data_gen.shards.run_shards` with the `TransformersGenerator` in this process (the stage's work:
  generation, the `math` reward, every filter, the keep policy, Parquet writes and commits);
- ray x1: the same `run_shards` with a `RayPool` of one actor that reserves every core (`CPU: <cores>`);
- ray x2: a pool of two actors, the cores split between them (`CPU: <cores / 2>` each);
- ray x1 half: one actor with half the cores (`CPU: <cores / 2>`), the same threads per actor as ray x2, so that
  ray x2 / ray x1 half is the scaling at equal threads per worker.
Throughput is generated tokens / wall seconds of the run; engine start-up (the actors, model loading) is excluded
on every side and printed on its own. The configurations alternate `--rounds` times so that load from other
processes hits them alike; the medians are compared. "busy" is the share of the run's wall time the workers spent
in their shards (generation and judging), the rest being hand-out, transfer and the driver's commits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generation import bare_transformers, load_rows  # noqa: E402  (benchmarks/generation.py)


def ours(generator, pool, rows: list[dict], a: argparse.Namespace, seed: int) -> tuple[float, float]:
    """(tokens/s, busy share) of the stage's work on `generator` here or on `pool`'s actors."""
    from data_gen.rejection import FilterConfig
    from data_gen.shards import run_shards
    from posttrain.generation import SamplingConfig
    from rewards import build_reward

    reward = build_reward([{"name": "math"}]) if pool is None else None
    sampling = SamplingConfig(n=a.n, temperature=1.0, max_tokens=a.max_tokens)
    busy: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        counts = run_shards(
            generator,
            rows,
            reward,
            Path(out),
            shard_size=a.shard_size,
            seed=seed,
            show_progress=False,
            sampling=sampling,
            filters=FilterConfig(),
            pool=pool,
            on_shard=lambda stats: busy.append(stats["seconds"]),
        )
        wall = time.perf_counter() - start
    workers = len(pool.actors) if pool is not None else 1
    return counts["num_tokens"] / wall, sum(busy) / (workers * wall)


def worker_threads(worker) -> int:
    """On an actor: torch's intra-op threads (Ray sets OMP_NUM_THREADS from the actor's CPUs)."""
    import torch

    return torch.get_num_threads()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--model", default="embedded")
    a = p.parse_args()

    import ray
    import torch

    from data_gen.shards import shard_worker
    from posttrain.generation import GeneratorConfig, make_generator
    from posttrain.generation.executor import ExecutorConfig
    from posttrain.generation.ray_pool import RayPool

    cores = os.cpu_count() or 2
    batch = a.shard_size * a.n  # one shard's sequences per generate call, on every side
    config = GeneratorConfig(backend="transformers", batch_size=batch)
    rows = load_rows(a.prompts)
    print(
        f"{a.prompts} prompts x {a.n} samples, max {a.max_tokens} tokens, shards of {a.shard_size} prompts, "
        f"{cores} cores, torch threads here {torch.get_num_threads()}",
        flush=True,
    )
    # Room for every pool at once (only one runs at a time): the cluster's CPUs are logical, for placement.
    ray.init(num_cpus=3 * cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    here = make_generator(a.model, config)
    pools = {}
    for name, workers, cpus in (("ray x1", 1, cores), ("ray x1 half", 1, cores / 2), ("ray x2", 2, cores / 2)):
        begin = time.perf_counter()
        executor = ExecutorConfig(kind="ray", num_workers=workers, resources_per_worker={"CPU": cpus})
        pools[name] = RayPool(executor, shard_worker, (a.model, config, 0, [{"name": "math"}], "benchmark"))
        threads = pools[name].apply(worker_threads)
        print(f"{name}: {workers} actor(s) up in {time.perf_counter() - begin:.1f}s, {threads} torch threads each")

    runs = {
        "bare": lambda r: (bare_transformers(here.model, here.tokenizer, rows, a, batch), 1.0),
        "local": lambda r: ours(here, None, rows, a, seed=r),
        "ray x1": lambda r: ours(None, pools["ray x1"], rows, a, seed=r),
        "ray x1 half": lambda r: ours(None, pools["ray x1 half"], rows, a, seed=r),
        "ray x2": lambda r: ours(None, pools["ray x2"], rows, a, seed=r),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for r in range(a.rounds):
        for name, fn in runs.items():
            results[name].append(fn(r))
        line = ", ".join(f"{name} {v[-1][0]:.1f}" for name, v in results.items())
        print(f"  round {r} (tok/s): {line}", flush=True)
    med = {name: statistics.median(t for t, _ in v) for name, v in results.items()}
    busy = {name: statistics.median(b for _, b in v) for name, v in results.items()}
    print("median tokens/s (busy share of the workers):")
    for name in runs:
        print(f"  {name:11s} {med[name]:7.1f}" + (f"  (busy {busy[name]:.2f})" if name.startswith("ray") else ""))
    print(f"ray x2 / ray x1: {med['ray x2'] / med['ray x1']:.3f}")
    print(f"ray x2 / ray x1 half (equal threads per worker): {med['ray x2'] / med['ray x1 half']:.3f}")
    print(f"ray x1 / bare:   {med['ray x1'] / med['bare']:.3f}")
    print(f"local / bare:    {med['local'] / med['bare']:.3f}")
    for pool in pools.values():
        pool.close()
    here.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
