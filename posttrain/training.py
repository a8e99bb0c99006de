"""Training helpers shared by the SFT and GRPO stages: chat tokenization with assistant-only loss masks, learning
rate schedules (cosine and DeepSeek LLM's multi-step), wall-clock checkpointing, per-step metrics, and finding the
last complete checkpoint to resume from.

Assistant masks are computed by rendering the chat template on growing prefixes of the conversation: the text that
an assistant turn adds after the generation prompt is its span. This works for any prefix-preserving template
(SmolLM2's ChatML included) without `{% generation %}` markers, and keeps the end-of-turn token in the loss so the
model learns to stop.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from posttrain.errors import DataError
from posttrain.stages.base import MetricsLogger

MULTISTEP_POINTS = ((0.8, 0.316), (0.9, 0.1))  # DeepSeek LLM: 31.6% of peak at 80% of training, 10% at 90%


def tokenize_chat(messages: list[dict[str, str]], tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    """Tokenize a conversation; `assistant_masks` is 1 on assistant-turn tokens (end-of-turn included).

    Raises:
        ValueError: the chat template is not prefix-preserving, so turns cannot be located.
    """
    spans = []
    for k, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True) if k else ""
        upto = tokenizer.apply_chat_template(messages[: k + 1], tokenize=False)
        if not upto.startswith(before):
            raise ValueError("the chat template is not prefix-preserving; cannot mask assistant turns")
        spans.append((len(before), len(upto.rstrip())))
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_length
    )
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return {"input_ids": enc["input_ids"], "assistant_masks": mask}


def tokenize_dataset(ds: Any, tokenizer: Any, max_length: int, name: str):
    """Map a dataset with a `messages` column to input_ids + assistant_masks; drop rows with no trainable token."""
    out = ds.map(
        lambda row: tokenize_chat(row["messages"], tokenizer, max_length),
        remove_columns=ds.column_names,
        desc=f"tokenizing {name}",
    )
    out = out.filter(lambda row: 1 in row["assistant_masks"], desc=f"dropping {name} rows cut before the answer")
    if len(out) == 0:
        raise DataError(f"{name}: no row keeps an assistant token within max_length={max_length}; raise max_length")
    return out


def lr_lambda(kind: str, num_warmup: int, num_training: int):
    """step -> multiplier of the peak learning rate, for torch's LambdaLR."""

    def schedule(step: int) -> float:
        if step < num_warmup:
            return (step + 1) / (num_warmup + 1)
        frac = (step - num_warmup) / max(1, num_training - num_warmup)
        if kind == "constant":
            return 1.0
        if kind == "linear":
            return max(0.0, 1.0 - frac)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
        if kind == "multistep":
            progress = step / max(1, num_training)
            return next((m for point, m in reversed(MULTISTEP_POINTS) if progress >= point), 1.0)
        raise ValueError(f"unknown lr schedule {kind!r}")

    return schedule


def build_optimizer(model: Any, lr: float, weight_decay: float, schedule: str, num_warmup: int, num_training: int):
    """AdamW (no decay on biases and norms) and the LambdaLR schedule; the Trainer saves and restores both.

    The fused AdamW kernel is TRL's default; its step on the 135M embedded model takes 0.08 s on a 2-core CPU against
    0.37 s for the foreach one.
    """
    import torch

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, num_warmup, num_training))
    return optimizer, scheduler


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder. The Trainer writes trainer_state.json last, so a folder without a
    readable one was cut off mid-save: it is deleted, never trusted."""
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for path in checkpoints_dir.glob("checkpoint-*"):
        try:
            step = int(path.name.split("-")[1])
            json.loads((path / "trainer_state.json").read_text())
            found.append((step, path))
        except (ValueError, OSError, IndexError):
            shutil.rmtree(path, ignore_errors=True)
    return max(found)[1] if found else None


def checkpoint_step(path: Path | None) -> int:
    return int(path.name.split("-")[1]) if path else 0


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop logged rows past the checkpoint being resumed, so a resumed run does not log those steps twice."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= after_step]
    path.write_text("".join(line + "\n" for line in keep))


def trainer_kwargs(cfg: Any, ctx: Any) -> dict[str, Any]:
    """The TrainingArguments that SFT and GRPO share, from the fields their configs have in common."""
    import torch

    return dict(
        output_dir=str(ctx.path("checkpoints")),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=not ctx.show_progress,
        dataloader_num_workers=0,
    )


def resume_point(ctx: Any) -> tuple[Path | None, int]:
    """(last complete checkpoint or None, its step), with metrics.jsonl cut back to that step."""
    checkpoint = last_checkpoint(ctx.path("checkpoints"))
    step = checkpoint_step(checkpoint)
    truncate_metrics(ctx.path("metrics.jsonl"), step)
    return checkpoint, step


def make_callbacks(metrics_path: Path, save_minutes: float | None):
    """Trainer callbacks: every log row to metrics.jsonl; a checkpoint whenever `save_minutes` have passed."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self):
            self.logger = MetricsLogger(metrics_path)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                self.logger.log(state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

    class WallClockCheckpoint(TrainerCallback):
        def __init__(self):
            self.last = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if save_minutes and time.time() - self.last >= save_minutes * 60:
                control.should_save = True
            if control.should_save:
                self.last = time.time()

    return [MetricsCallback(), WallClockCheckpoint()]


def save_model_atomically(model: Any, tokenizer: Any, out: Path, dtype: Any = None) -> None:
    """save_pretrained into a temporary sibling, then rename: `out` is either complete or absent."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
