"""Training helpers shared by the training stages (SFT, GRPO, reward model, DPO): chat tokenization with
assistant-only loss masks, learning rate schedules (cosine and DeepSeek LLM's multi-step), the held-out split,
wall-clock checkpointing, per-step metrics (TRL's logs, each reward's statistics, a few completions per GRPO step),
finding the last complete checkpoint to resume from, the checked pass-through of TRL settings a stage does not
curate (`trl_args`), a LoRA wrapper, a reward-model loader (a causal LM checkpoint plus a one-output score head), and
a JSON cache for evals run before training (so a resumed run does not redo them).

Assistant masks are computed by rendering the chat template on growing prefixes of the conversation: the text that
an assistant turn adds after the generation prompt is its span. This works for any prefix-preserving template
(SmolLM2's ChatML included) without `{% generation %}` markers, and keeps the end-of-turn token in the loss so the
model learns to stop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from posttrain.errors import DataError, did_you_mean
from posttrain.files import MetricsLogger, read_jsonl, truncate_jsonl
from posttrain.trackers import training_report_args
from rewards.base import Reward, completion_text

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


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (its header names byte ranges past the end), or None."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "shorter than its header"
        length = int.from_bytes(head, "little")
        if length > size - 8:
            return "header longer than the file"
        header = json.loads(f.read(length))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return None if 8 + length + end == size else f"{size} bytes where its header needs {8 + length + end}"


def checkpoint_problem(path: Path) -> str | None:
    """Why a `checkpoint-N` folder cannot be resumed from, or None: trainer_state.json (written last by the Trainer)
    must parse, every .safetensors must be as long as its header says, and every torch file (optimizer, scheduler,
    RNG state: zip archives) must pass its CRC check. Catches a save cut off by a kill or a full disk."""
    import zipfile

    files = [path / "trainer_state.json", *sorted(p for p in path.iterdir() if p.name != "trainer_state.json")]
    for file in files:
        try:
            if file.name == "trainer_state.json":
                json.loads(file.read_text())
            elif file.suffix == ".safetensors" and (problem := _safetensors_problem(file)):
                return f"{file.name}: {problem}"
            elif file.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(file) as archive:
                    if (bad := archive.testzip()) is not None:
                        return f"{file.name}: member {bad} fails its CRC check"
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            return f"{file.name}: {type(e).__name__}: {e}"
    return None


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest `checkpoint-N` folder that can be resumed from. One that cannot (cut off mid-save, truncated
    weights or optimizer state) is deleted with a warning, and the one before it is used."""
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for path in checkpoints_dir.glob("checkpoint-*"):
        try:
            found.append((int(path.name.split("-")[1]), path))
        except (ValueError, IndexError):
            continue  # not a checkpoint of ours
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if not problem.startswith("trainer_state.json"):  # the save finished (its last file is whole), then broke
            warnings.warn(
                f"checkpoint {path} cannot be resumed from ({problem}); using the one before it", stacklevel=2
            )
        shutil.rmtree(path, ignore_errors=True)
    return None


def checkpoint_step(path: Path | None) -> int:
    return int(path.name.split("-")[1]) if path else 0


# TrainingArguments that `trainer_kwargs` sets from the stage's own fields (or from where it runs): never in trl_args.
MANAGED_TRL_ARGS = (
    "output_dir",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "seed",
    "data_seed",
    "bf16",
    "gradient_checkpointing",
    "use_cpu",
    "report_to",
    "disable_tqdm",
    "dataloader_num_workers",
    "max_steps",
)


def resolve_bf16(setting: bool | str) -> bool:
    """A stage's `bf16` setting as TrainingArguments takes it. `auto` is on where bf16 matmuls are native: a CUDA
    device with bf16, or a CPU with AVX-512 BF16 (`cpu_has_bf16`). There autocast trains the embedded model 1.75x
    faster than fp32 on 2 cores; an AVX2-only CPU would emulate bf16 and run slower, so it stays in fp32. Master
    weights and optimizer state stay fp32 either way."""
    if setting != "auto":
        return bool(setting)
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from posttrain.model.loading import cpu_has_bf16

    return cpu_has_bf16()


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
        bf16=resolve_bf16(cfg.bf16),
        gradient_checkpointing=cfg.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,  # our console shows the progress (make_callbacks); TRL's bar would go to log.txt
        dataloader_num_workers=0,
        **training_report_args(ctx.report_to, ctx.recipe, ctx.name, ctx.stage_dir),
    )


def check_trl_args(trl_args: dict[str, Any], trl_config: str, curated: Any) -> list[str]:
    """Problems with a stage's `trl_args` (settings passed straight to TRL's `trl_config` class, e.g. GRPOConfig):
    every key must be a field of that class (did-you-mean otherwise), and not one the stage sets itself (a field of
    the stage config `curated`, or one in MANAGED_TRL_ARGS). TRL is imported only when there is something to check."""
    if not trl_args:
        return []
    import dataclasses

    import trl

    known = {f.name for f in dataclasses.fields(getattr(trl, trl_config))}
    own = {f.name for f in dataclasses.fields(curated)}
    problems = []
    for key in trl_args:
        if key not in known:
            problems.append(f"trl_args.{key}: not a field of trl.{trl_config}{did_you_mean(key, known)}")
        elif key in own:
            problems.append(f"trl_args.{key}: set it as the stage's own field `{key}`, not in trl_args")
        elif key in MANAGED_TRL_ARGS:
            problems.append(f"trl_args.{key}: the stage sets it itself; remove it from trl_args")
    return problems


def held_out_split(train: Any, eval_size: int, seed: int, where: str) -> tuple[Any, Any]:
    """(train, held-out) rows: `eval_size` rows drawn with `seed`; (train, None) when eval_size is 0."""
    if eval_size == 0:
        return train, None
    if len(train) <= eval_size:
        raise DataError(f"{where}: {len(train)} rows cannot spare eval_size={eval_size}; lower eval_size")
    split = train.train_test_split(test_size=eval_size, seed=seed, shuffle=True)
    return split["train"], split["test"]


def whole_run_loss(metrics_path: Path, this_run_loss: float, resumed_from_step: int) -> float:
    """The training loss of the whole run: the Trainer's own figure covers only the steps this process ran, so after
    a resume it is the mean of the logged per-step losses instead (each logged row weighs the same)."""
    if resumed_from_step == 0:
        return this_run_loss
    losses = [row["loss"] for row in read_jsonl(metrics_path) if isinstance(row.get("loss"), (int, float))]
    return sum(losses) / len(losses) if losses else this_run_loss


def train_from(trainer: Any, resume_from: Path | None, step: int) -> Any:
    """`trainer.train()`, resumed from `resume_from` (at `step`) when given. A checkpoint at or past `max_steps` is a
    run cut off after its last step (while saving the model or evaluating): its weights and state are loaded and no
    step is trained, where transformers' Trainer would train one step more than asked."""
    max_steps = trainer.args.max_steps
    if resume_from is None or max_steps <= 0 or step < max_steps:
        return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(resume_from))
    trainer.state = TrainerState.load_from_json(str(resume_from / "trainer_state.json"))
    losses = [row["train_loss"] for row in trainer.state.log_history if "train_loss" in row]
    return TrainOutput(trainer.state.global_step, losses[-1] if losses else float("nan"), {})


def resume_point(ctx: Any) -> tuple[Path | None, int]:
    """(last complete checkpoint or None, its step), with metrics.jsonl cut back to that step."""
    checkpoint = last_checkpoint(ctx.path("checkpoints"))
    step = checkpoint_step(checkpoint)
    truncate_jsonl(ctx.path("metrics.jsonl"), step)
    return checkpoint, step


def _number(value: Any) -> float | None:
    try:
        return None if isinstance(value, bool) or value is None else float(value)
    except (TypeError, ValueError):
        return None


# The few numbers a training stage's progress display shows, when the trainer logs them.
PROGRESS_KEYS = ("loss", "reward", "eval_loss", "rewards/accuracies", "rewards/margins", "grad_norm")


def make_callbacks(metrics_path: Path, save_minutes: float | None, show_progress: bool = True):
    """Trainer callbacks: every log row to metrics.jsonl; a checkpoint whenever `save_minutes` have passed; the
    stage's progress on the console (steps, the last logged loss / reward, ETA)."""
    from transformers import TrainerCallback

    from posttrain.progress import progress_bar

    class ConsoleProgress(TrainerCallback):
        bar = None  # made when training begins (an eval may log before that)
        shown: dict[str, float] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = progress_bar(state.max_steps, unit="steps", disable=not show_progress)
                self.bar.update(state.global_step)  # a resumed run starts where it stopped

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs:
                # Transformers' PrinterCallback may have turned the values into strings before we see them.
                new = {k: _number(logs[k]) for k in PROGRESS_KEYS if _number(logs.get(k)) is not None}
                if new:  # the closing summary log has none of these: keep the last step's numbers
                    self.shown = {k: round(v, 4) for k, v in list(new.items())[:4]}
                    self.bar.set_postfix(self.shown)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

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

    return [MetricsCallback(), WallClockCheckpoint(), ConsoleProgress()]


def save_model_atomically(model: Any, tokenizer: Any, out: Path) -> None:
    """save_pretrained into a temporary sibling, then rename: `out` is either complete or absent."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


class CompletionLogger:
    """Wraps each configured reward so that a few completions per step, with every reward's score, go to a JSONL
    file. TRL calls the rewards in order on the same batch; the last one writes the rows."""

    def __init__(self, path: Path, funcs: list[Any], num_to_log: int):
        self.path, self.num_to_log = path, num_to_log
        self.names = [f.__name__ for f in funcs]
        self.scores: dict[str, list] = {}
        self.funcs = [self._wrap(f) for f in funcs]

    def _wrap(self, func: Any):
        def logged(completions: list, **columns: Any) -> list[float | None]:
            values = func(completions, **columns)
            self.scores[func.__name__] = values
            if func.__name__ == self.names[-1]:
                self._write(completions, columns)
            return values

        logged.__name__ = func.__name__
        return logged

    def _write(self, completions: list, columns: dict[str, Any]) -> None:
        state = columns.get("trainer_state")
        if self.num_to_log <= 0 or (state is not None and not state.is_world_process_zero):
            return
        step = state.global_step + 1 if state is not None else None
        prompts = columns.get("prompts") or [None] * len(completions)
        with self.path.open("a", encoding="utf-8") as f:
            for i in range(min(self.num_to_log, len(completions))):
                prompt = prompts[i][-1]["content"] if isinstance(prompts[i], list) else prompts[i]
                row = {"step": step, "prompt": prompt, "completion": completion_text(completions[i])}
                row["rewards"] = {n: self.scores[n][i] for n in self.names}
                if "answer" in columns:
                    row["answer"] = columns["answer"][i]
                f.write(json.dumps(row, default=str) + "\n")


def reward_metrics_callback(reward: Reward):
    """A Trainer callback adding each reward's mean / std / frac_none / seconds (since the last log) to the logs."""
    from transformers import TrainerCallback

    class RewardMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "loss" in logs:
                logs.update({f"reward_stats/{k}": v for k, v in reward.metrics().items() if not math.isnan(v)})

    return RewardMetrics()


def wrap_lora(model: Any, rank: int, alpha: int, targets: list[str], task_type: str = "CAUSAL_LM") -> Any:
    """A PEFT LoRA model of `model` (adapters of `rank` on `targets`; ["all-linear"] = every Linear but the head)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type=task_type,
    )
    return get_peft_model(model, config)


def load_reward_model(spec: str, seed: int) -> tuple[Any, Any]:
    """(sequence classifier with one output, tokenizer) from a causal LM checkpoint or a classifier folder, in float32
    on CPU. A causal LM gets a new score head, initialised from `seed` (so a rerun starts from the same head)."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from posttrain.model.loading import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(spec)
    torch.manual_seed(seed)
    dtype = torch.float32 if not torch.cuda.is_available() else "auto"
    with suppress_seqcls_warning():  # the new score head and the dropped LM head are expected, not a problem
        model = AutoModelForSequenceClassification.from_pretrained(resolve_model(spec), num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    return model, tokenizer


def cached_json(path: Path, compute: Any, write: bool = True) -> Any:
    """`compute()`'s result, kept in `path`: a resumed run reads it back instead of recomputing (an eval before
    training, whose model is gone once training has started). Only the process with `write` writes it (the main one
    under a multi-process launch)."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    if not write:
        return result
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return result


SCHEDULE_POSITIVE = ("max_steps", "batch_size", "gradient_accumulation_steps", "max_length", "save_steps")


def check_schedule(cfg: Any) -> list[str]:
    """The checks every training stage's schedule shares (sft, dpo, reward_model): one line per bad field."""
    problems = [
        f"{name}: must be positive, got {getattr(cfg, name)}" for name in SCHEDULE_POSITIVE if getattr(cfg, name) <= 0
    ]
    if cfg.learning_rate <= 0:
        problems.append(f"learning_rate: must be positive, got {cfg.learning_rate}")
    if not 0 <= cfg.warmup_ratio < 1:
        problems.append(f"warmup_ratio: must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.weight_decay < 0:
        problems.append(f"weight_decay: must be >= 0, got {cfg.weight_decay}")
    if cfg.eval_size < 0:
        problems.append(f"eval_size: must be >= 0 (0: nothing held out), got {cfg.eval_size}")
    if cfg.num_epochs is not None and cfg.num_epochs <= 0:
        problems.append(f"num_epochs: must be positive, got {cfg.num_epochs}")
    return problems


def schedule_ignored(cfg: Any) -> list[str]:
    """`max_steps` set beside `num_epochs` has no effect: the warning line, or none."""
    default = next(f.default for f in dataclasses.fields(cfg) if f.name == "max_steps")
    if cfg.num_epochs is not None and cfg.max_steps != default:
        return [f"max_steps: {cfg.max_steps} is ignored because num_epochs ({cfg.num_epochs}) is set"]
    return []


def planned_optimizer(cfg: Any, model: Any, num_rows: int) -> tuple[int, Any, Any]:
    """(max_steps, optimizer, scheduler) for a stage's schedule: `num_epochs` over `num_rows` rows when set, else
    `max_steps`; warm-up a `warmup_ratio` of them."""
    steps_per_epoch = math.ceil(num_rows / (cfg.batch_size * cfg.gradient_accumulation_steps))
    max_steps = math.ceil(steps_per_epoch * cfg.num_epochs) if cfg.num_epochs else cfg.max_steps
    optimizer, scheduler = build_optimizer(
        model, cfg.learning_rate, cfg.weight_decay, cfg.lr_scheduler, int(cfg.warmup_ratio * max_steps), max_steps
    )
    return max_steps, optimizer, scheduler


def final_policy(trainer: Any, lora_rank: int, fp8_report: Any, metrics: dict[str, Any]) -> Any:
    """The trained model as it is saved: a LoRA adapter merged in, FP8 Linears back to high precision (their
    counts recorded in `metrics`)."""
    policy = trainer.model.merge_and_unload() if lora_rank > 0 else trainer.model
    if fp8_report is not None:
        from posttrain.model.fp8 import convert_from_fp8

        convert_from_fp8(policy)
        metrics.update(fp8_layers=fp8_report.converted, fp8_skipped=fp8_report.skipped)
    return policy
