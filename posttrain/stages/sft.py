"""Stage `sft`: supervised fine-tuning on chat data with TRL's SFTTrainer.

Rows come from a source. Rows with `messages` are used as they are; rows with an `answer` become DeepSeek-V3's
expert samples `<problem, original response>` (a short worked response ending in `\\boxed{}`). The loss covers
assistant tokens only. A held-out split gives the eval loss before training and every `eval_steps`. Checkpoints
are written every `save_steps` steps and every `save_minutes` minutes; after a kill the next run resumes from the
last complete one. The result is an HF model folder (`model/`) that `from_pretrained` and vLLM load.

    posttrain run recipes/sft.yaml stages.math_expert.max_steps=20
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from data_gen.sources import SourceConfig
from posttrain.errors import DataError
from posttrain.stages.base import STAGES, StageContext, bf16_field


@dataclass
class SftConfig:
    data: SourceConfig | list[SourceConfig] = field(
        metadata={
            "help": "training rows: a source (string or mapping) or a list of them, e.g. a rejection-sampling "
            "dataset of R1 rows beside the task source whose rows become <problem, original response> samples"
        }
    )
    model: str = field(default="${model}", metadata={"help": "model to fine-tune (default: the recipe's model)"})
    samples: Literal["auto", "messages", "expert"] = field(
        default="auto",
        metadata={
            "help": "'messages': rows hold conversations; 'expert': build <problem, worked answer> samples "
            "from `answer`; 'auto': each row's messages if it has them, else its expert sample"
        },
    )
    system_prompt: str | None = field(default=None, metadata={"help": "system turn prepended to every sample"})
    eval_data: SourceConfig | None = field(default=None, metadata={"help": "held-out rows (default: split `data`)"})
    eval_size: int = field(default=32, metadata={"help": "rows held out of `data` when eval_data is not set"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps (ignored when num_epochs is set)"})
    num_epochs: float | None = field(default=None, metadata={"help": "train for this many epochs instead"})
    batch_size: int = field(default=8, metadata={"help": "sequences per device per micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: float = field(default=2e-5, metadata={"help": "peak learning rate"})
    lr_scheduler: Literal["cosine", "multistep", "linear", "constant"] = field(
        default="cosine", metadata={"help": "multistep = DeepSeek LLM: 31.6% of peak at 80%, 10% at 90%"}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps of linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    max_length: int = field(default=512, metadata={"help": "tokens per sequence; longer ones are cut"})
    packing: bool = field(default=False, metadata={"help": "pack several samples into one sequence"})
    padding_free: bool = field(
        default=True,
        metadata={
            "help": "lay each batch's rows end to end as one sequence instead of padding them to the longest: the "
            "same batches, loss and gradients, no compute spent on padding (an SDPA model attends row by row, "
            "posttrain.model.segment_attention; flash attention reads the row bounds itself)"
        },
    )
    eval_steps: int = field(default=25, metadata={"help": "evaluate every N steps (0: only before and after)"})
    logging_steps: int = field(default=5, metadata={"help": "log metrics every N steps"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    save_minutes: float = field(default=10.0, metadata={"help": "also checkpoint every M minutes of wall time"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "seed for shuffling and initialisation"})
    bf16: bool | Literal["auto"] = bf16_field()
    fp8: bool = field(default=False, metadata={"help": "DeepSeek-V3 fine-grained FP8 Linears (posttrain.model.fp8)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for activation memory"})
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more trl.SFTConfig settings, passed as they are (each name checked against TRL's)"},
    )

    def check(self) -> list[str]:
        from posttrain.training import check_schedule, check_trl_args

        return check_schedule(self) + check_trl_args(self.trl_args, "SFTConfig", SftConfig)

    def ignored(self) -> list[str]:
        """Settings that are set but have no effect, one line each (the loader shows them as warnings)."""
        from posttrain.training import schedule_ignored

        return schedule_ignored(self)


def build_samples(ds: Any, mode: str, system_prompt: str | None, name: str):
    """Rows -> a dataset with one `messages` column of complete conversations. In 'auto' mode each row is taken on
    its own: its `messages` when it has them (a rejection-sampling row), else its expert sample (a task row), so one
    stage can train on both sample types from a list of sources."""
    from data_gen.samples import expert_sample

    has_messages = "messages" in ds.column_names
    if mode == "messages" or (mode == "auto" and has_messages and "answer" not in ds.column_names):
        if not has_messages:
            raise DataError(f"{name}: samples: messages needs a 'messages' column; found {ds.column_names}")
        ds = ds.select_columns(["messages"]).filter(lambda row: bool(row["messages"]))
    else:
        if "answer" not in ds.column_names:
            raise DataError(
                f"{name}: rows have neither 'messages' nor 'answer' (columns: {ds.column_names}); "
                "give conversations or a source with answers"
            )
        use_messages = mode == "auto" and has_messages

        def sample(row: dict[str, Any]) -> dict[str, Any]:
            if use_messages and row.get("messages"):
                return {"messages": row["messages"]}
            return expert_sample(row) or {"messages": []}

        ds = ds.map(sample, remove_columns=ds.column_names)
        ds = ds.filter(lambda row: len(row["messages"]) > 0)
    if system_prompt:
        ds = ds.map(lambda row: {"messages": [{"role": "system", "content": system_prompt}, *row["messages"]]})
    if len(ds) == 0:
        raise DataError(f"{name}: no usable rows after building samples")
    return ds


@STAGES.register("sft")
class SftStage:
    config_class = SftConfig
    outputs = {"model": "model", "metrics": "metrics.jsonl", "checkpoints": "checkpoints"}

    def __init__(self, config: SftConfig, ctx: StageContext):
        self.cfg = config
        self.ctx = ctx

    def _datasets(self, tokenizer: Any):
        from data_gen.sources import load_data, load_source
        from posttrain.training import held_out_split, tokenize_dataset

        cfg, where = self.cfg, f"stage '{self.ctx.name}'"
        stats: dict[str, int] = {}
        train = build_samples(
            load_data(cfg.data, f"{where}: data", stats, require_prompt=False),
            cfg.samples,
            cfg.system_prompt,
            f"{where}: data",
        )
        if cfg.eval_data is not None:
            evals = build_samples(load_source(cfg.eval_data), cfg.samples, cfg.system_prompt, f"{where}: eval_data")
        else:
            train, evals = held_out_split(train, cfg.eval_size, cfg.seed, where)
        train = tokenize_dataset(train, tokenizer, cfg.max_length, f"{where}: data")
        evals = tokenize_dataset(evals, tokenizer, cfg.max_length, f"{where}: eval") if evals is not None else None
        return train, evals, stats

    def run(self) -> dict[str, Any]:
        import torch
        from trl import SFTConfig, SFTTrainer

        from posttrain.model.attention import restore_attention
        from posttrain.model.loading import load_model_and_tokenizer
        from posttrain.model.segment_attention import use_segment_attention
        from posttrain.training import (
            make_callbacks,
            planned_optimizer,
            resume_point,
            save_model_atomically,
            train_from,
            trainer_kwargs,
            whole_run_loss,
        )

        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.seed)
        model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
        train, evals, stats = self._datasets(tokenizer)
        fp8_report = self._convert_fp8(model) if cfg.fp8 else None
        max_steps, optimizer, scheduler = planned_optimizer(cfg, model, len(train))
        resume_from, step = resume_point(ctx)
        # Rows are already cut to max_length by _datasets; TRL refuses padding_free with a max_length it would not
        # enforce, so it gets None then (packing does enforce it: TRL's packing is padding-free by itself).
        padding_free = cfg.padding_free and not cfg.packing
        args = SFTConfig(
            **trainer_kwargs(cfg, ctx),
            max_steps=max_steps,
            per_device_eval_batch_size=cfg.batch_size,
            max_length=None if padding_free else cfg.max_length,
            packing=cfg.packing,
            padding_free=padding_free,
            eval_strategy="steps" if evals is not None and cfg.eval_steps > 0 else "no",
            eval_steps=cfg.eval_steps or None,
            **cfg.trl_args,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=evals,
            processing_class=tokenizer,
            optimizers=(optimizer, scheduler),
            callbacks=make_callbacks(ctx.path("metrics.jsonl"), cfg.save_minutes, ctx.show_progress),
        )
        # An SDPA model attends row by row over the padding-free batch (posttrain.model.segment_attention);
        # flash attention reads the row bounds itself.
        previous_attention = use_segment_attention(model) if trainer.padding_free else None
        eval_start = None
        if evals is not None and resume_from is None:
            eval_start = trainer.evaluate()["eval_loss"]
        result = train_from(trainer, resume_from, step)
        eval_end = trainer.evaluate()["eval_loss"] if evals is not None else None
        restore_attention(model, previous_attention)
        if fp8_report is not None:
            from posttrain.model.fp8 import convert_from_fp8

            convert_from_fp8(model)
        # Saved in the training dtype: rounding to bf16 would erase much of a small fine-tuning delta.
        save_model_atomically(model, tokenizer, ctx.path("model"))
        metrics = {
            "steps": trainer.state.global_step,
            "bf16": bool(trainer.args.bf16),
            "padding_free": bool(trainer.padding_free),
            "train_rows": len(train),
            "eval_rows": len(evals) if evals is not None else 0,
            "rows_skipped": stats.get("num_skipped", 0),
            "train_loss": round(whole_run_loss(ctx.path("metrics.jsonl"), result.training_loss, step), 5),
            "eval_loss_start": _first_eval(ctx.path("metrics.jsonl"), eval_start),
            "eval_loss_end": eval_end,
            "resumed_from_step": step,
        }
        if fp8_report is not None:
            metrics.update(fp8_layers=fp8_report.converted, fp8_skipped=fp8_report.skipped)
        return metrics

    def _convert_fp8(self, model: Any):
        from posttrain.model.fp8 import convert_to_fp8

        return convert_to_fp8(model)


def _first_eval(metrics_path: Any, current: float | None) -> float | None:
    """The eval loss logged before training, also when this run resumed after it (read back from metrics.jsonl)."""
    from posttrain.files import read_jsonl

    if current is not None:
        return current
    return next((row["eval_loss"] for row in read_jsonl(metrics_path) if "eval_loss" in row), None)
