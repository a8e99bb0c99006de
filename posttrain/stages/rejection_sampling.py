"""Stage `rejection_sampling`: DeepSeek-V3's distillation step, turning an expert's samples into SFT data.

A source gives prompts; a generator (vLLM when importable, else transformers) draws `sampling.n` samples each;
reward plugins score them; filters drop R1's pathologies (truncation, length, repetition, format, language mixing,
overthinking) and the keep policy chooses what stays (see `data_gen.rejection`). Kept samples become chat rows of
two types, `r1` (`<system prompt, problem, response>`) and `original` (`<problem, reference solution>`), written
to Parquet shards as they complete (`data_gen.shards`); a killed run resumes at the first unfinished shard. With
`llm_judge` as the verifier and `builtin:chat_prompts` as the source, the same stage makes the non-reasoning half
of the SFT mix. Each shard also writes preference pairs to `pairs/` (`data_gen.pairs`): for a prompt with a sample
that passed every filter and one that a filter in `pairs.rejected` dropped, up to `pairs.per_prompt` rows
<prompt, chosen, rejected> with why the rejected one failed, for a `reward_model` or `dpo` stage. The manifest holds
acceptance per filter and per source, rows per type, pairs per filter and tokens generated; `metrics.jsonl` has a
row per shard. `executor: {kind: ray, num_workers: N}` runs the shards on Ray actors (one generator each), and
under a multi-process launch every rank takes its share (`posttrain.generation.executor`).

    posttrain run recipes/rejection_sampling.yaml stages.distill.sampling.n=16 stages.distill.keep=shortest_correct
    posttrain run recipes/rejection_sampling.yaml stages.distill.pairs.per_prompt=2 \
        stages.distill.pairs.rejected=[incorrect,truncated,repetition]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from data_gen.pairs import PairsConfig
from data_gen.rejection import R1_SYSTEM_PROMPT, SAMPLE_TYPES, FilterConfig, KeepPolicy
from data_gen.sources import SourceConfig, known_columns
from posttrain.files import MetricsLogger
from posttrain.generation import GeneratorConfig, SamplingConfig
from posttrain.generation.executor import ExecutorConfig
from posttrain.stages.base import STAGES, StageContext
from rewards.entries import RewardEntry

log = logging.getLogger(__name__)


@dataclass
class RejectionSamplingConfig:
    data: SourceConfig | list[SourceConfig] = field(
        metadata={"help": "prompts: one source (string or mapping) or a list of them; rows need `prompt`"}
    )
    rewards: list[RewardEntry] = field(
        metadata={"help": "verifiers {name, weight?, **settings}; the first decides correctness unless `verifier`"}
    )
    model: str = field(default="${model}", metadata={"help": "the expert that samples (default: the recipe's model)"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"help": "n, temperature, top_p, ..."})
    generator: GeneratorConfig = field(default_factory=GeneratorConfig, metadata={"help": "backend and its options"})
    filters: FilterConfig = field(default_factory=FilterConfig, metadata={"help": "R1 pathologies to drop"})
    keep: KeepPolicy = field(
        default="all_correct", metadata={"help": "all_correct, best (highest reward), shortest_correct, first_k"}
    )
    keep_k: int = field(default=1, metadata={"help": "samples kept per prompt by first_k"})
    verifier: str | None = field(default=None, metadata={"help": "the reward that decides correctness"})
    pass_threshold: float = field(default=1.0, metadata={"help": "a sample is correct when the verifier >= this"})
    system_prompt: str | None = field(
        default=R1_SYSTEM_PROMPT,
        metadata={"help": "system turn for generation and r1 rows (asks for reflection and verification); null: none"},
    )
    sample_types: list[str] = field(
        default_factory=lambda: list(SAMPLE_TYPES), metadata={"help": "rows to write per kept sample: r1, original"}
    )
    pairs: PairsConfig = field(
        default_factory=PairsConfig,
        metadata={"help": "preference pairs written to pairs/: per_prompt, rejected (the filters that count)"},
    )
    domain: str | None = field(default=None, metadata={"help": "the `domain` column (null: the task or category)"})
    shard_size: int = field(default=64, metadata={"help": "prompts per output shard (the unit of resume)"})
    seed: int = field(default=0, metadata={"help": "sampling seed (each shard and prompt derive their own from it)"})
    executor: ExecutorConfig = field(
        default_factory=ExecutorConfig,
        metadata={"help": "where shards run: local, or ray {num_workers, resources_per_worker, address, max_retries}"},
    )

    def sources(self) -> list[SourceConfig]:
        return self.data if isinstance(self.data, list) else [self.data]

    def check(self) -> list[str]:
        from posttrain.errors import did_you_mean, one_of
        from rewards.entries import check_reward_choice, check_reward_columns

        problems = []
        if not self.sources():
            problems.append("data: give at least one source")
        if self.keep_k <= 0:
            problems.append(f"keep_k: must be positive, got {self.keep_k}")
        if self.shard_size <= 0:
            problems.append(f"shard_size: must be positive, got {self.shard_size}")
        for t in self.sample_types:
            if t not in SAMPLE_TYPES:
                problems.append(
                    f"sample_types: unknown type '{t}'{did_you_mean(t, SAMPLE_TYPES)}; use {one_of(SAMPLE_TYPES)}"
                )
        if not self.rewards:
            problems.append("rewards: give at least one verifier, e.g. [{name: math}]")
        else:
            problems += check_reward_choice("verifier", self.verifier, self.rewards)
        columns = [known_columns(s.source) for s in self.sources()]
        shared = set.intersection(*columns) if columns and all(c is not None for c in columns) else None
        problems += check_reward_columns(self.rewards, shared)
        return problems


@STAGES.register("rejection_sampling")
class RejectionSamplingStage:
    config_class = RejectionSamplingConfig
    outputs = {"dataset": "dataset", "rejected": "rejected", "pairs": "pairs", "metrics": "metrics.jsonl"}
    # Under a multi-process launch every rank generates and commits its share of the shards (k % world == rank) and
    # rank 0 waits for all of them; with a Ray executor rank 0 drives the workers and the other ranks only wait.
    main_process_only = False

    def __init__(self, config: RejectionSamplingConfig, ctx: StageContext):
        self.cfg, self.ctx = config, ctx

    def run(self) -> dict[str, Any]:
        from data_gen.rejection import summarize
        from data_gen.shards import run_shards
        from posttrain.generation import make_generator
        from posttrain.generation.executor import rank_device, rank_share
        from rewards import build_reward

        cfg, ctx = self.cfg, self.ctx
        rank, world = rank_share()
        ray = cfg.executor.kind == "ray"
        if ray and rank != 0:
            return {}  # rank 0 drives the Ray workers; this rank waits for its manifest
        rows = load_prompts(cfg.sources(), f"stage '{ctx.name}'")
        logger = MetricsLogger(ctx.path("metrics.jsonl")) if rank == 0 else None

        def log_shard(stats: dict[str, Any]) -> None:
            c = stats["counts"]
            logger.log(
                stats["shard"],
                acceptance=round(c.get("kept", 0) / max(1, c["num_samples"]), 4),
                samples=c["num_samples"],
                kept=c.get("kept", 0),
                pairs=c.get("pairs", 0),
                tokens=c["num_tokens"],
                tokens_per_s=round(c["num_tokens"] / max(stats["seconds"], 1e-9), 1),
                **{k: v for k, v in c.items() if k.startswith("rejected/")},
            )

        where = f"stage '{ctx.name}'"
        generator = reward = pool = None
        if ray:
            from data_gen.shards import shard_worker, worker_backend
            from posttrain.generation.ray_pool import RayPool

            args = (cfg.model, cfg.generator, cfg.seed, cfg.rewards, where)
            pool = RayPool(cfg.executor, shard_worker, args, where=f"{where}: ")
        else:
            reward = build_reward(cfg.rewards, where)
            with rank_device(cfg.generator.tensor_parallel_size):
                generator = make_generator(cfg.model, cfg.generator, seed=cfg.seed)
        try:
            counts = run_shards(
                generator,
                rows,
                reward,
                ctx.stage_dir,
                shard_size=cfg.shard_size,
                seed=cfg.seed,
                show_progress=ctx.show_progress and rank == 0,
                on_shard=log_shard if rank == 0 else None,
                sampling=cfg.sampling,
                filters=cfg.filters,
                keep=cfg.keep,
                keep_k=cfg.keep_k,
                verifier=cfg.verifier,
                pass_threshold=cfg.pass_threshold,
                system_prompt=cfg.system_prompt,
                sample_types=cfg.sample_types,
                pairs=cfg.pairs,
                domain=cfg.domain,
                source=cfg.sources()[0].source,
                pool=pool,
                share=(rank, world),
            )
            backend = pool.apply(worker_backend) if pool is not None else generator.name
        finally:
            if pool is not None:
                pool.close()
            else:
                generator.close()
        if rank != 0:
            return {}  # rank 0 has waited for every shard and reports them all
        metrics = summarize(counts)
        metrics.update(backend=backend, num_shards=counts["num_shards"], resumed_shards=counts["num_shards_resumed"])
        if pool is not None:
            metrics.update(executor="ray", workers=cfg.executor.num_workers, retries=pool.retries)
        elif world > 1:
            metrics.update(ranks=world)
        if metrics["kept"] == 0:
            log.warning("stage '%s': no sample passed; the dataset is empty (see rejected/ for why)", ctx.name)
        return metrics


def load_prompts(sources: list[SourceConfig], where: str) -> Any:
    """Load the sources; several are joined as dicts with the union of their columns and an `origin` column (the
    source string), which per-source counts use when a row has no task or category."""
    from data_gen.sources import load_source
    from posttrain.errors import DataError

    parts = []
    for i, src in enumerate(sources):
        ds = load_source(src)
        if "prompt" not in ds.column_names:
            raise DataError(f"{where}: data[{i}] '{src.source}' has no 'prompt' column; found {ds.column_names}")
        parts.append(ds)
    if len(parts) == 1:
        return parts[0]
    keys = list(dict.fromkeys(k for ds in parts for k in ds.column_names))
    return [
        {**dict.fromkeys(keys), **row, "origin": src.source} for src, ds in zip(sources, parts) for row in ds.to_list()
    ]
