"""Stage `reward_model`: a Bradley-Terry reward model trained on preference pairs with TRL's RewardTrainer.

DeepSeek-V3's model-based reward: a reward model trained from a causal LM checkpoint (by default the recipe's
model, or the SFT stage's: `model: ${stages.sft.model}`) on <prompt, chosen, rejected> pairs from any source (a
rejection_sampling stage's `pairs`, a JSONL, a Parquet folder; `data_gen.pairs.load_pairs` checks every row). The
causal LM gets a one-output score head and learns -log sigmoid(r(chosen) - r(rejected)). Whole prompts are held out
(`eval_size` pairs or more); their pairwise accuracy (chosen scored higher) and mean margin r(chosen) - r(rejected),
before and after training, overall and per rejected filter, go into the manifest, with the same numbers for any
`baselines` (other rewards scored on the same pairs, e.g. the embedded `llm_judge`). `eval_pairs.jsonl` keeps the
held-out pairs with their final scores. Checkpoints every `save_steps` steps and `save_minutes` minutes; a killed
run resumes from the last complete one. The output folder loads with `AutoModelForSequenceClassification` and is
what the `reward_model` reward takes: `{name: reward_model, model: ${stages.rm.model}}`.

    posttrain run recipes/grpo.yaml stages.rm.max_steps=60
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from data_gen.sources import SourceConfig
from posttrain.stages.base import STAGES, StageContext, bf16_field
from rewards.entries import RewardEntry


@dataclass
class RewardModelConfig:
    data: SourceConfig | list[SourceConfig] = field(
        metadata={
            "help": "preference pairs (prompt, chosen, rejected): e.g. ${stages.distill.pairs}, jsonl:PATH, or a list (pooled)"
        }
    )
    model: str = field(
        default="${model}", metadata={"help": "causal LM (or classifier) to start from (e.g. ${stages.sft.model})"}
    )
    eval_data: SourceConfig | None = field(default=None, metadata={"help": "held-out pairs (default: split data)"})
    eval_size: int = field(default=32, metadata={"help": "pairs held out of `data` (whole prompts; at least this)"})
    reference: str | None = field(
        default=None,
        metadata={
            "help": "a column (e.g. answer) shown with the prompt as `Reference answer: ...` (DeepSeek-V3's reward "
            "model for free-form ground truth); the reward then needs the same `reference:`"
        },
    )
    baselines: list[RewardEntry] = field(
        default_factory=list,
        metadata={"help": "other rewards scored on the held-out pairs for comparison, e.g. [{name: llm_judge}]"},
    )
    max_steps: int = field(default=50, metadata={"help": "optimizer steps (ignored when num_epochs is set)"})
    num_epochs: float | None = field(default=None, metadata={"help": "train for this many epochs instead"})
    batch_size: int = field(default=8, metadata={"help": "pairs per device per micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate"})
    lr_scheduler: Literal["cosine", "multistep", "linear", "constant"] = field(
        default="cosine", metadata={"help": "multistep = DeepSeek LLM: 31.6% of peak at 80%, 10% at 90%"}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps of linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    max_length: int = field(default=512, metadata={"help": "tokens per prompt + response; longer pairs are dropped"})
    eval_batch_size: int = field(default=16, metadata={"help": "sequences per forward pass when scoring pairs"})
    eval_steps: int = field(default=0, metadata={"help": "TRL eval on the held-out pairs every N steps (0: none)"})
    logging_steps: int = field(default=5, metadata={"help": "log metrics every N steps"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    save_minutes: float = field(default=10.0, metadata={"help": "also checkpoint every M minutes of wall time"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "seed for the split, the score head, shuffling"})
    bf16: bool | Literal["auto"] = bf16_field()
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for activation memory"})
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more trl.RewardConfig settings (e.g. center_rewards_coefficient), each checked"},
    )

    def check(self) -> list[str]:
        from posttrain.training import check_schedule, check_trl_args

        problems = check_schedule(self)
        if self.eval_batch_size <= 0:
            problems.append(f"eval_batch_size: must be positive, got {self.eval_batch_size}")
        return problems + check_trl_args(self.trl_args, "RewardConfig", RewardModelConfig)

    def ignored(self) -> list[str]:
        """Settings that are set but have no effect, one line each (the loader shows them as warnings)."""
        from posttrain.training import schedule_ignored

        out = schedule_ignored(self)
        if self.baselines and self.eval_size == 0 and self.eval_data is None:
            out.append("baselines: ignored without held-out pairs (eval_size: 0 and no eval_data)")
        return out


@STAGES.register("reward_model")
class RewardModelStage:
    config_class = RewardModelConfig
    outputs = {
        "model": "model",
        "metrics": "metrics.jsonl",
        "eval_pairs": "eval_pairs.jsonl",
        "checkpoints": "checkpoints",
    }

    def __init__(self, config: RewardModelConfig, ctx: StageContext):
        self.cfg = config
        self.ctx = ctx

    def _datasets(self):
        from data_gen.pairs import load_pairs, split_pairs

        cfg, where = self.cfg, f"stage '{self.ctx.name}'"
        train = load_pairs(cfg.data, f"{where}: data")
        if cfg.eval_data is not None:
            evals = load_pairs(cfg.eval_data, f"{where}: eval_data")
        else:
            train, evals = split_pairs(train, cfg.eval_size, cfg.seed, where)
        return train, evals

    def _with_reference(self, pairs: Any, name: str) -> Any:
        """The pairs as the model reads them: with `reference`, the reference shown in each prompt, as the
        `reward_model` reward shows it (the held-out pairs are written and given to baselines as they were)."""
        if self.cfg.reference is None or pairs is None:
            return pairs
        from posttrain.errors import DataError
        from rewards.model_utils import with_reference

        column = self.cfg.reference
        if column not in pairs.column_names:
            raise DataError(
                f"stage '{self.ctx.name}': reference: the {name} pairs have no '{column}' column "
                f"(columns: {', '.join(pairs.column_names)}); name one of them or drop `reference`"
            )
        missing = [i for i, v in enumerate(pairs[column]) if v is None or str(v) == ""]
        if missing:
            raise DataError(
                f"stage '{self.ctx.name}': reference: {name} pair {missing[0]} has an empty '{column}' "
                f"({len(missing)} such pairs); fill it or drop `reference`"
            )
        return pairs.map(lambda row: {"prompt": with_reference(row["prompt"], row[column])})

    def _score(self, model: Any, tokenizer: Any, evals: Any) -> tuple[dict, list, list]:
        from data_gen.pairs import pair_metrics, score_pairs

        chosen, rejected = score_pairs(model, tokenizer, evals, self.cfg.eval_batch_size, self.cfg.max_length)
        filters = list(evals["rejected_filter"]) if "rejected_filter" in evals.column_names else None
        return pair_metrics(chosen, rejected, filters), chosen, rejected

    def run(self) -> dict[str, Any]:
        from trl import RewardConfig, RewardTrainer

        from posttrain.training import (
            cached_json,
            load_reward_model,
            make_callbacks,
            planned_optimizer,
            resume_point,
            save_model_atomically,
            train_from,
            trainer_kwargs,
            whole_run_loss,
        )

        cfg, ctx = self.cfg, self.ctx
        train, evals = self._datasets()
        # what the model reads (with `reference`, the prompt shows it); `evals` stays as given for the baselines
        train, shown = self._with_reference(train, "data"), self._with_reference(evals, "held-out")
        model, tokenizer = load_reward_model(cfg.model, cfg.seed)
        max_steps, optimizer, scheduler = planned_optimizer(cfg, model, len(train))
        resume_from, step = resume_point(ctx)
        periodic = evals is not None and cfg.eval_steps > 0
        args = RewardConfig(
            **trainer_kwargs(cfg, ctx),
            max_steps=max_steps,
            max_length=cfg.max_length,
            per_device_eval_batch_size=cfg.batch_size,
            eval_strategy="steps" if periodic else "no",
            eval_steps=cfg.eval_steps or None,
            **cfg.trl_args,
        )
        columns = ["prompt", "chosen", "rejected"]
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=train.select_columns(columns),
            eval_dataset=shown.select_columns(columns) if periodic else None,
            processing_class=tokenizer,
            optimizers=(optimizer, scheduler),
            callbacks=make_callbacks(ctx.path("metrics.jsonl"), cfg.save_minutes),
        )
        main_process = args.process_index == 0
        start = None
        if evals is not None and main_process:  # the fresh score head: kept on disk, a resumed run has it no more
            start = cached_json(ctx.path("eval_start.json"), lambda: self._score(model, tokenizer, shown)[0])
        result = train_from(trainer, resume_from, step)
        metrics = {
            "steps": trainer.state.global_step,
            "bf16": bool(trainer.args.bf16),
            "train_pairs": len(train),
            "train_pairs_too_long": len(train) - len(trainer.train_dataset),
            "eval_pairs": len(evals) if evals is not None else 0,
            "train_loss": round(whole_run_loss(ctx.path("metrics.jsonl"), result.training_loss, step), 5),
            "resumed_from_step": step,
        }
        if not main_process:
            trainer.accelerator.wait_for_everyone()  # until the main process has scored and saved
            return metrics
        if evals is not None:
            end, chosen, rejected = self._score(trainer.model, tokenizer, shown)
            self._write_eval_pairs(evals, chosen, rejected)
            metrics.update({f"eval_start/{k}": v for k, v in start.items()})
            metrics.update({f"eval_end/{k}": v for k, v in end.items()})
            metrics.update(self._baselines(evals))
        else:
            ctx.path("eval_pairs.jsonl").write_text("")  # the output exists, empty, with no held-out pairs
        save_model_atomically(trainer.model, tokenizer, ctx.path("model"))
        trainer.accelerator.wait_for_everyone()
        return metrics

    def _baselines(self, evals: Any) -> dict[str, Any]:
        from data_gen.pairs import pair_metrics, score_pairs_with_reward
        from rewards import build_reward

        if not self.cfg.baselines:
            return {}
        reward = build_reward(self.cfg.baselines, f"stage '{self.ctx.name}': baselines")
        filters = list(evals["rejected_filter"]) if "rejected_filter" in evals.column_names else None
        out = {}
        for name, (chosen, rejected) in score_pairs_with_reward(reward, evals).items():
            out.update({f"baseline/{name}/{k}": v for k, v in pair_metrics(chosen, rejected, filters).items()})
        return out

    def _write_eval_pairs(self, evals: Any, chosen: list[float], rejected: list[float]) -> None:
        keep = [c for c in ("prompt", "chosen", "rejected", "rejected_filter", "answer") if c in evals.column_names]
        with self.ctx.path("eval_pairs.jsonl").open("w", encoding="utf-8") as f:
            for row, c, r in zip(evals.select_columns(keep).to_list(), chosen, rejected):
                f.write(json.dumps({**row, "score_chosen": round(c, 5), "score_rejected": round(r, 5)}) + "\n")
