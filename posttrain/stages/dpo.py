"""Stage `dpo`: direct preference optimization with TRL's DPOTrainer (DeepSeek LLM aligned with SFT, then DPO).

A policy (by default the recipe's model; after SFT, `model: ${stages.sft.model}`) learns from <prompt, chosen,
rejected> pairs from any source (a rejection_sampling stage's `pairs`, a JSONL, a Parquet folder; checked row by
row by `data_gen.pairs.load_pairs`) against a frozen reference (`ref_model`, by default the starting policy), with
`beta` and any of TRL's `loss_type`s (sigmoid = DPO, ipo, hinge, robust, ...). Whole prompts are held out
(`eval_size` pairs or more) and measured twice, before and after training, both in the manifest: the DPO eval on
their pairs (loss, reward accuracy and margin, the log-probs of each side), and a generation eval of their prompts
(or of `eval_prompts`) with `posttrain.evaluation`: `eval_num_samples` completions each scored by `eval_rewards`
(mean reward, pass@1, pass@k), their mean length, repetition ratio and fraction truncated. Schedules, checkpoints
(`save_steps`, `save_minutes`) and resume after a kill, `lora_rank` and `fp8` work as in `sft` and `grpo`. The
result is an HF model folder (`model/`).

    posttrain run recipes/dpo.yaml stages.dpo.beta=0.2 stages.dpo.loss_type=ipo
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from data_gen.sources import SourceConfig, known_columns
from posttrain.stages.base import STAGES, StageContext, bf16_field
from rewards.entries import RewardEntry

log = logging.getLogger(__name__)

# TRL's DPO losses (trl.DPOConfig.loss_type): sigmoid is the DPO paper's, ipo the IPO paper's.
LossType = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]
PAIR_EVAL_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


@dataclass
class DpoConfig:
    data: SourceConfig | list[SourceConfig] = field(
        metadata={
            "help": "preference pairs (prompt, chosen, rejected): e.g. ${stages.distill.pairs}, jsonl:PATH, or a list (pooled)"
        }
    )
    model: str = field(default="${model}", metadata={"help": "policy to train (e.g. ${stages.sft.model})"})
    ref_model: str | None = field(default=None, metadata={"help": "frozen reference (default: the starting policy)"})
    beta: float = field(default=0.1, metadata={"help": "strength of the pull towards the reference (IPO: tau)"})
    loss_type: LossType = field(default="sigmoid", metadata={"help": "TRL's DPO loss: sigmoid (DPO), ipo, hinge, ..."})
    eval_data: SourceConfig | None = field(default=None, metadata={"help": "held-out pairs (default: split data)"})
    eval_size: int = field(default=32, metadata={"help": "pairs held out of `data` (whole prompts; at least this)"})
    eval_prompts: SourceConfig | None = field(
        default=None, metadata={"help": "prompts of the generation eval (default: those of the held-out pairs)"}
    )
    eval_rewards: list[RewardEntry] = field(
        default_factory=lambda: [RewardEntry("repetition")],
        metadata={"help": "rewards of the generation eval; the first decides pass@k (e.g. [{name: math}])"},
    )
    eval_num_samples: int = field(default=2, metadata={"help": "completions sampled per held-out prompt"})
    eval_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the eval (0: greedy)"})
    eval_max_tokens: int = field(default=128, metadata={"help": "new tokens per eval completion"})
    eval_batch_size: int = field(default=32, metadata={"help": "sequences per generate call in the eval"})
    pass_threshold: float = field(
        default=1.0, metadata={"help": "an eval sample passes when the first reward >= this"}
    )
    max_steps: int = field(default=100, metadata={"help": "optimizer steps (ignored when num_epochs is set)"})
    num_epochs: float | None = field(default=None, metadata={"help": "train for this many epochs instead"})
    batch_size: int = field(default=8, metadata={"help": "pairs per device per micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: float = field(default=1e-6, metadata={"help": "peak learning rate"})
    lr_scheduler: Literal["cosine", "multistep", "linear", "constant"] = field(
        default="cosine", metadata={"help": "multistep = DeepSeek LLM: 31.6% of peak at 80%, 10% at 90%"}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps of linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    max_length: int = field(default=512, metadata={"help": "tokens per prompt + response; longer ones are cut"})
    eval_steps: int = field(default=0, metadata={"help": "DPO eval on the held-out pairs every N steps (0: none)"})
    logging_steps: int = field(default=5, metadata={"help": "log metrics every N steps"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    save_minutes: float = field(default=10.0, metadata={"help": "also checkpoint every M minutes of wall time"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "seed for the split, shuffling and the eval"})
    bf16: bool | Literal["auto"] = bf16_field()
    fp8: bool = field(
        default=False,
        metadata={"help": "DeepSeek-V3 FP8 Linears in the policy and the reference (posttrain.model.fp8)"},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for activation memory"})
    lora_rank: int = field(default=0, metadata={"help": "train a LoRA adapter of this rank (0: full fine-tuning)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "modules that get adapters"}
    )
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more trl.DPOConfig settings (e.g. label_smoothing, precompute_ref_log_probs), checked"},
    )

    def check(self) -> list[str]:
        from posttrain.training import check_schedule, check_trl_args
        from rewards.entries import check_reward_columns

        problems = check_schedule(self)
        for name in ("eval_num_samples", "eval_max_tokens", "eval_batch_size"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}: must be positive, got {getattr(self, name)}")
        if self.beta <= 0:
            problems.append(f"beta: must be positive, got {self.beta}")
        if self.lora_rank < 0:
            problems.append(f"lora_rank: must be >= 0 (0: full fine-tuning), got {self.lora_rank}")
        if not self.eval_rewards:
            problems.append("eval_rewards: give at least one, e.g. [{name: repetition}] or [{name: math}]")
        elif self.eval_prompts is not None:
            columns = known_columns(self.eval_prompts.source)
            problems += [f"eval_{p}" for p in check_reward_columns(self.eval_rewards, columns)]
        return problems + check_trl_args(self.trl_args, "DPOConfig", DpoConfig)

    def ignored(self) -> list[str]:
        """Settings that are set but have no effect, one line each (the loader shows them as warnings)."""
        from posttrain.training import schedule_ignored

        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        out = schedule_ignored(self)
        if self.lora_rank == 0:
            out += [f"{n}: ignored without lora_rank > 0" for n in ("lora_alpha",) if getattr(self, n) != defaults[n]]
        return out


@STAGES.register("dpo")
class DpoStage:
    config_class = DpoConfig
    outputs = {"model": "model", "metrics": "metrics.jsonl", "checkpoints": "checkpoints"}

    def __init__(self, config: DpoConfig, ctx: StageContext):
        self.cfg = config
        self.ctx = ctx

    def _datasets(self):
        from data_gen.pairs import load_pairs, prompt_rows, split_pairs
        from data_gen.sources import load_source

        cfg, where = self.cfg, f"stage '{self.ctx.name}'"
        train = load_pairs(cfg.data, f"{where}: data")
        if cfg.eval_data is not None:
            evals = load_pairs(cfg.eval_data, f"{where}: eval_data")
        else:
            train, evals = split_pairs(train, cfg.eval_size, cfg.seed, where)
        if cfg.eval_prompts is not None:
            prompts = load_source(cfg.eval_prompts).to_list()
        else:
            prompts = prompt_rows(evals) if evals is not None else None
        return train, evals, prompts

    def _generation_eval(self, model: Any, tokenizer: Any, rows: list[dict] | None, reward: Any) -> dict | None:
        from posttrain.evaluation import evaluate_rewards

        if rows is None:
            return None
        cfg = self.cfg
        return evaluate_rewards(
            model,
            tokenizer,
            rows,
            reward,
            num_samples=cfg.eval_num_samples,
            temperature=cfg.eval_temperature,
            max_new_tokens=cfg.eval_max_tokens,
            batch_size=cfg.eval_batch_size,
            seed=cfg.seed,
            pass_threshold=cfg.pass_threshold,
        )

    def _pair_eval(self, trainer: Any) -> dict | None:
        if trainer.eval_dataset is None:
            return None
        out = trainer.evaluate()
        return {k: round(out[f"eval_{k}"], 5) for k in PAIR_EVAL_KEYS if f"eval_{k}" in out}

    def run(self) -> dict[str, Any]:
        import torch
        from trl import DPOConfig, DPOTrainer

        from posttrain.model.loading import load_model_and_tokenizer
        from posttrain.training import (
            cached_json,
            final_policy,
            make_callbacks,
            planned_optimizer,
            resume_point,
            save_model_atomically,
            train_from,
            trainer_kwargs,
            whole_run_loss,
            wrap_lora,
        )
        from rewards import build_reward

        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.seed)
        model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
        train, evals, prompts = self._datasets()
        reward = build_reward(cfg.eval_rewards, f"stage '{ctx.name}': eval_rewards")
        main_process = _process_index() == 0
        gen_start = None
        if main_process:  # the starting policy is gone once training has begun: its eval is kept on disk
            gen_start = cached_json(
                ctx.path("eval_start.json"), lambda: self._generation_eval(model, tokenizer, prompts, reward)
            )
        ref = None
        if cfg.ref_model is not None or cfg.lora_rank == 0:  # with LoRA the reference is the adapter-free base
            ref, _ = load_model_and_tokenizer(cfg.ref_model or cfg.model, for_training=True)
        fp8_report = self._to_fp8(model, ref) if cfg.fp8 else None
        if cfg.lora_rank > 0:
            model = wrap_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules)
        max_steps, optimizer, scheduler = planned_optimizer(cfg, model, len(train))
        resume_from, step = resume_point(ctx)
        periodic = evals is not None and cfg.eval_steps > 0
        args = DPOConfig(
            **trainer_kwargs(cfg, ctx),
            max_steps=max_steps,
            beta=cfg.beta,
            loss_type=[cfg.loss_type],
            max_length=cfg.max_length,
            max_grad_norm=cfg.max_grad_norm,
            per_device_eval_batch_size=cfg.batch_size,
            eval_strategy="steps" if periodic else "no",
            eval_steps=cfg.eval_steps or None,
            **cfg.trl_args,
        )
        columns = ["prompt", "chosen", "rejected"]
        trainer = DPOTrainer(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=train.select_columns(columns),
            eval_dataset=evals.select_columns(columns) if evals is not None else None,
            processing_class=tokenizer,
            optimizers=(optimizer, scheduler),
            callbacks=make_callbacks(ctx.path("metrics.jsonl"), cfg.save_minutes),
        )
        # The DPO eval is collective under a multi-process launch: every process runs it, the main one keeps it.
        pairs_start = cached_json(ctx.path("pair_eval_start.json"), lambda: self._pair_eval(trainer), main_process)
        result = train_from(trainer, resume_from, step)
        pairs_end = self._pair_eval(trainer)
        metrics: dict[str, Any] = {
            "steps": trainer.state.global_step,
            "bf16": bool(trainer.args.bf16),
            "train_pairs": len(train),
            "eval_pairs": len(evals) if evals is not None else 0,
            "eval_prompts": len(prompts) if prompts is not None else 0,
            "train_loss": round(whole_run_loss(ctx.path("metrics.jsonl"), result.training_loss, step), 5),
            "resumed_from_step": step,
        }
        if not main_process:
            trainer.accelerator.wait_for_everyone()  # until the main process has saved and evaluated
            return metrics
        policy = final_policy(trainer, cfg.lora_rank, fp8_report, metrics)
        # Saved in the training dtype: rounding to bf16 would erase much of a small preference update.
        save_model_atomically(policy, tokenizer, ctx.path("model"))
        gen_end = self._generation_eval(policy, tokenizer, prompts, reward)
        for name, values in (("pairs_start", pairs_start), ("pairs_end", pairs_end)):
            metrics.update({f"eval_{name}/{k}": v for k, v in (values or {}).items()})
        for name, values in (("start", gen_start), ("end", gen_end)):
            metrics.update({f"eval_{name}/{k}": v for k, v in (values or {}).items()})
        trainer.accelerator.wait_for_everyone()
        return metrics

    def _to_fp8(self, model: Any, ref: Any):
        from posttrain.model.fp8 import convert_to_fp8

        if ref is not None:  # the same FP8 forward on both sides: their log-ratio starts at exactly 0
            convert_to_fp8(ref)
        return convert_to_fp8(model)


def _process_index() -> int:
    """This process's rank under `accelerate launch` (0 when run alone), before any trainer exists."""
    from accelerate import PartialState

    return PartialState().process_index
