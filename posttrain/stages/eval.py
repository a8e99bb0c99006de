"""Stage `eval`: sample held-out prompts and score them, to show progress between the stages of a recipe.

A source gives held-out prompts; a generator (vLLM when importable, else transformers) samples `n` completions per
prompt; reward plugins score them (`posttrain.evaluation.evaluate`). The manifest and `metrics.jsonl` report pass@1
and pass@n (a sample passes when the first reward, or `pass_reward`, is >= `pass_threshold`), the mean of every
reward and of the weighted total, the mean length in tokens, the mean repetition ratio and the fraction truncated.
`samples.jsonl` keeps every completion with its scores. Put one before and after a training stage:

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

    def check(self) -> list[str]:
        from rewards.entries import check_reward_choice, check_reward_columns

        if not self.rewards:
            return ["rewards: give at least one, e.g. [{name: math}]"]
        problems = check_reward_choice("pass_reward", self.pass_reward, self.rewards)
        return problems + check_reward_columns(self.rewards, known_columns(self.data))


@STAGES.register("eval")
class EvalStage:
    config_class = EvalConfig
    outputs = {"metrics": "metrics.jsonl", "samples": "samples.jsonl"}
    main_process_only = True  # under a multi-process launch, rank 0 evaluates; the others wait for its manifest

    def __init__(self, config: EvalConfig, ctx: StageContext):
        self.cfg, self.ctx = config, ctx

    def run(self) -> dict[str, Any]:
        from data_gen.sources import load_source
        from posttrain.errors import DataError
        from posttrain.evaluation import evaluate
        from posttrain.generation import make_generator
        from rewards import build_reward

        cfg, ctx = self.cfg, self.ctx
        rows = load_source(cfg.data)
        if "prompt" not in rows.column_names:
            raise DataError(f"stage '{ctx.name}': data '{cfg.data.source}' has no 'prompt' column")
        reward = build_reward(cfg.rewards, f"stage '{ctx.name}'")
        generator = make_generator(cfg.model, cfg.generator, seed=cfg.seed)
        try:
            s = cfg.sampling
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
        with ctx.path("samples.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, default=str) + "\n" for r in records)
        ctx.path("metrics.jsonl").unlink(missing_ok=True)  # one row, written whole (also after a rerun)
        MetricsLogger(ctx.path("metrics.jsonl")).log(0, **metrics)
        label = {"point": cfg.point, "domain": cfg.domain or cfg.data.domain}
        return {**metrics, "backend": generator.name, **{k: v for k, v in label.items() if v is not None}}
