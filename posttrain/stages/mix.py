"""Stage `mix`: the SFT mix of DeepSeek-V3's instruction tuning, weighted and cleaned, streamed to Parquet shards.

Sources are other stages' datasets (`${stages.X.dataset}`) or files, each with a `weight` (share of `size`) or a
`count`, and a domain tag. Every row goes through chat-format validation, an optional token-length filter with the
target model's tokenizer, exact dedup, MinHash-LSH near dedup and n-gram decontamination against eval sets; the
survivors are sampled to the targets (upsampling records its repeats) and shuffled with `seed`. Outputs: the
dataset folder (`part-*.parquet`: messages, source, domain, repeat, source_row, and the columns a verifier re-checks
a row with, source_id / answer / tests / entry_point / metadata / task, null for sources without them; and a card
`README.md` with the composition tables), `composition.png`,
`composition.json` and `removed.parquet` (every removed row with its step and reason). A killed run resumes from
its last complete scan chunk or shard. A two-stage SFT (all data, then chat only, as DeepSeek LLM did to curb
repetition) is two mix stages, the second taking the first's dataset with `domains: [chat]`.

    posttrain run recipes/mix.yaml stages.mix_all.size=200000 stages.mix_all.dedup.near_threshold=0.8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_gen.mix.options import Decontam, Dedup, MixSource, check_sources
from posttrain.files import MetricsLogger
from posttrain.stages.base import STAGES, StageContext


@dataclass
class MixConfig:
    sources: list[MixSource] = field(
        metadata={"help": "sources: a data string, or {data, weight | count, domain, domains, name}"}
    )
    size: int | None = field(
        default=None, metadata={"help": "rows in the mix (e.g. 1500000); null: counts, or every surviving row once"}
    )
    seed: int = field(default=0, metadata={"help": "seed of sampling and shuffling"})
    dedup: Dedup = field(default_factory=Dedup, metadata={"help": "exact and near deduplication"})
    decontaminate: Decontam = field(default_factory=Decontam, metadata={"help": "n-gram decontamination"})
    tokenizer: str = field(
        default="${model}", metadata={"help": "tokenizer of the target model (for max_tokens): name or folder"}
    )
    max_tokens: int | None = field(
        default=None, metadata={"help": "drop conversations longer than this many tokens, chat template included"}
    )
    rows_per_shard: int = field(default=100_000, metadata={"help": "rows per output Parquet shard"})
    num_workers: int = field(default=0, metadata={"help": "scan processes; 0: one per CPU core"})
    title: str | None = field(default=None, metadata={"help": "title of the dataset card"})

    def check(self) -> list[str]:
        problems = check_sources(self.sources, self.size)
        if self.max_tokens is not None and self.max_tokens <= 0:
            problems.append(f"max_tokens: must be positive, got {self.max_tokens}")
        if self.rows_per_shard <= 0:
            problems.append(f"rows_per_shard: must be positive, got {self.rows_per_shard}")
        if self.num_workers < 0:
            problems.append(f"num_workers: must be >= 0, got {self.num_workers}")
        return problems


@STAGES.register("mix")
class MixStage:
    config_class = MixConfig
    # 2: near dedup compares the user and assistant turns only (a shared system prompt made distinct rows near copies)
    # 3: decontamination indexes an eval item's prompt and answer apart (a short prompt now matches as a whole)
    # 4: operators are words ("4 + 3" and "4 - 3" differ in decontamination and near dedup)
    version = 4
    outputs = {
        "dataset": "dataset",
        "card": "dataset/README.md",
        "plot": "composition.png",
        "composition": "composition.json",
        "removed": "removed.parquet",
    }

    def __init__(self, config: MixConfig, ctx: StageContext):
        self.cfg, self.ctx = config, ctx

    def run(self) -> dict[str, Any]:
        from data_gen.mix.build import build_mix
        from data_gen.mix.pool import STEPS

        cfg, ctx = self.cfg, self.ctx
        result = build_mix(
            cfg.sources,
            ctx.path(self.outputs["dataset"]),
            cfg.size,
            cfg.seed,
            dedup=cfg.dedup,
            decontaminate=cfg.decontaminate,
            tokenizer=cfg.tokenizer,
            max_tokens=cfg.max_tokens,
            rows_per_shard=cfg.rows_per_shard,
            num_workers=cfg.num_workers,
            report_dir=ctx.stage_dir,
            work_dir=ctx.path("work"),
            title=cfg.title or f"SFT mix: {ctx.recipe} / {ctx.name}",
            show_progress=ctx.show_progress,
        )
        ctx.path("metrics.jsonl").unlink(missing_ok=True)  # written whole at the end, also after a resume
        logger = MetricsLogger(ctx.path("metrics.jsonl"))
        removed = result.composition["removed"]
        left = result.composition["num_input"]
        for i, step in enumerate(STEPS):
            left -= removed.get(step, 0)
            logger.log(i, quality_step=step, rows=left)
        logger.log(len(STEPS), quality_step="output", rows=result.num_rows)
        return result.metrics
