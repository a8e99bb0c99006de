"""Stage `eval`: sample held-out prompts and score them, to show progress between the stages of a recipe.

A source gives held-out prompts; a generator (vLLM when importable, else transformers) samples `n` completions per
prompt; reward plugins score them (`posttrain.evaluation.evaluate`). The manifest and `metrics.jsonl` report pass@1
and pass@n (a sample passes when the first reward, or `pass_reward`, is >= `pass_threshold`), the mean of every
reward and of the weighted total, the mean length in tokens, the mean repetition ratio and the fraction truncated.
`samples.jsonl` keeps every completion with its scores. With `executor: {kind: ray}` or under a multi-process
launch, sampling is cut into shards of `shard_size` prompts (each seeded on its own, committed to `generated/`) drawn
by Ray actors or by every rank, and scored on rank 0. Put one before and after a training stage:

    - {name: eval_base, type: eval, model: ${model}, data: ..., rewards: [{name: math}]}
    - {name: eval_rl, type: eval, model: ${stages.rl.model}, data: ..., rewards: [{name: math}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from data_gen.sources import SourceConfig, known_columns
from posttrain.files import MetricsLogger
from posttrain.generation import GeneratorConfig, SamplingConfig
from posttrain.generation.executor import ExecutorConfig
from posttrain.stages.base import STAGES, StageContext
from rewards.entries import RewardEntry


@dataclass
class EvalConfig:
    data: SourceConfig = field(metadata={"help": "held-out prompts: a source string or mapping (rows need `prompt`)"})
    rewards: list[RewardEntry] = field(metadata={"help": "reward entries {name, weight?, **settings}"})
    model: str = field(default="${model}", metadata={"help": "model to evaluate (e.g. ${stages.rl.model})"})
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=4, temperature=0.7, max_tokens=256),
        metadata={"help": "n (the k of pass@k), temperature, top_p, max_tokens, stop"},
    )
    generator: GeneratorConfig = field(default_factory=GeneratorConfig, metadata={"help": "backend and its options"})
    system_prompt: str | None = field(default=None, metadata={"help": "system turn for prompts that have none"})
    pass_reward: str | None = field(default=None, metadata={"help": "the reward that decides pass (default: first)"})
    pass_threshold: float = field(default=1.0, metadata={"help": "a sample passes when that reward is >= this"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    point: str | None = field(
        default=None,
        metadata={
            "help": "the row of the chain report this eval fills: base, math_expert, sft, rl... (default: none)"
        },
    )
    domain: str | None = field(
        default=None, metadata={"help": "the column it fills: math, code, logic, chat (default: the data's domain)"}
    )
    executor: ExecutorConfig = field(
        default_factory=ExecutorConfig,
        metadata={"help": "where sampling runs: local, or ray {num_workers, resources_per_worker, address, ...}"},
    )
    shard_size: int = field(
        default=64,
        metadata={
            "help": "prompts per shard on a ray executor or under a multi-process launch (each shard seeded on its "
            "own, committed to generated/); a plain local eval samples all prompts in one call"
        },
    )

    def check(self) -> list[str]:
        from rewards.entries import check_reward_choice, check_reward_columns

        if self.shard_size <= 0:
            return [f"shard_size: must be positive, got {self.shard_size}"]
        if not self.rewards:
            return ["rewards: give at least one, e.g. [{name: math}]"]
        problems = check_reward_choice("pass_reward", self.pass_reward, self.rewards)
        return problems + check_reward_columns(self.rewards, known_columns(self.data))


@STAGES.register("eval")
class EvalStage:
    config_class = EvalConfig
    outputs = {"metrics": "metrics.jsonl", "samples": "samples.jsonl"}
    # Under a multi-process launch every rank samples its share of the shards and rank 0 scores them all; with a Ray
    # executor rank 0 drives the workers and the other ranks only wait for its manifest.
    main_process_only = False

    def __init__(self, config: EvalConfig, ctx: StageContext):
        self.cfg, self.ctx = config, ctx

    def run(self) -> dict[str, Any]:
        from data_gen.sources import load_source
        from posttrain.errors import DataError
        from posttrain.evaluation import evaluate
        from posttrain.generation import make_generator
        from posttrain.generation.executor import rank_share
        from rewards import build_reward

        cfg, ctx = self.cfg, self.ctx
        rank, world = rank_share()
        ray = cfg.executor.kind == "ray"
        if ray and rank != 0:
            return {}  # rank 0 drives the Ray workers; this rank waits for its manifest
        rows = load_source(cfg.data)
        if "prompt" not in rows.column_names:
            raise DataError(f"stage '{ctx.name}': data '{cfg.data.source}' has no 'prompt' column")
        reward = build_reward(cfg.rewards, f"stage '{ctx.name}'")
        s = cfg.sampling
        if ray or world > 1:
            metrics, records, backend = self._sharded(rows, reward, ray, (rank, world))
            if rank != 0:
                return {}  # rank 0 scores every shard and writes the outputs
        else:
            generator = make_generator(cfg.model, cfg.generator, seed=cfg.seed)
            try:
                metrics, records = evaluate(
                    generator,
                    rows,
                    reward,
                    n=s.n,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    max_tokens=s.max_tokens,
                    seed=cfg.seed,
                    stop=s.stop,
                    system_prompt=cfg.system_prompt,
                    pass_reward=cfg.pass_reward,
                    pass_threshold=cfg.pass_threshold,
                )
            finally:
                generator.close()
            backend = generator.name
        with ctx.path("samples.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, default=str) + "\n" for r in records)
        ctx.path("metrics.jsonl").unlink(missing_ok=True)  # one row, written whole (also after a rerun)
        MetricsLogger(ctx.path("metrics.jsonl")).log(0, **metrics)
        label = {"point": cfg.point, "domain": cfg.domain or cfg.data.domain}
        return {**metrics, "backend": backend, **{k: v for k, v in label.items() if v is not None}}

    def _sharded(self, rows: Any, reward: Any, ray: bool, share: tuple[int, int]) -> tuple[dict, list, str]:
        """Sample shard by shard on Ray workers or this rank's share (`posttrain.generation.sharded`), then, on
        rank 0, score every sample at once as `evaluate` does."""
        import time

        from posttrain.evaluation import score_samples
        from posttrain.generation import make_generator
        from posttrain.generation.base import with_system_prompt
        from posttrain.generation.executor import rank_device
        from posttrain.generation.sharded import generate_shards

        cfg, ctx = self.cfg, self.ctx
        start = time.time()
        rows = [dict(r) for r in rows]
        prompts = [with_system_prompt(r["prompt"], cfg.system_prompt) for r in rows]
        sampling = cfg.sampling.kwargs(cfg.seed)
        sampling.pop("seed")
        generator = pool = None
        if ray:
            from posttrain.generation.ray_pool import RayPool

            args = (cfg.model, cfg.generator, cfg.seed)
            pool = RayPool(cfg.executor, make_generator, args, where=f"stage '{ctx.name}': ")
        else:
            with rank_device(cfg.generator.tensor_parallel_size):
                generator = make_generator(cfg.model, cfg.generator, seed=cfg.seed)
        try:
            samples = generate_shards(
                prompts,
                ctx.path("generated"),
                sampling=sampling,
                seed=cfg.seed,
                shard_size=cfg.shard_size,
                generator=generator,
                pool=pool,
                share=share,
            )
            backend = pool.apply(backend_name) if pool is not None else generator.name
        finally:
            if pool is not None:
                pool.close()
            else:
                generator.close()
        if samples is None:  # not rank 0
            return {}, [], backend
        metrics, records = score_samples(rows, prompts, samples, reward, cfg.pass_reward, cfg.pass_threshold)
        metrics["seconds"] = round(time.time() - start, 1)
        if pool is not None:
            metrics.update(executor="ray", workers=cfg.executor.num_workers, retries=pool.retries)
        else:
            metrics.update(ranks=share[1])
        return metrics, records, backend


def backend_name(generator: Any) -> str:
    """On a Ray worker (whose state is its generator): the backend's name."""
    return generator.name
