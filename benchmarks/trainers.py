"""Benchmark: step time of our `reward_model` and `dpo` stages against bare TRL RewardTrainer / DPOTrainer with the
same config, in one run.

    python benchmarks/trainers.py [--model tiny|embedded] [--steps 8] [--rounds 2] [--trainers reward_model,dpo]

Both sides train the same model on the same preference pairs (reasoning-gym chain_sum prompts; chosen a short boxed
answer, rejected a rambling wrong one, written once to a JSONL both read) with the same trainer config (batch 8
pairs, max_length 256, cosine schedule, fp32, no gradient checkpointing, the same seed and so the same pair order):
- bare: `RewardTrainer(AutoModelForSequenceClassification(num_labels=1), args=RewardConfig(...))` and
  `DPOTrainer(model, args=DPOConfig(beta=0.1, loss_type=["sigmoid"]))` (TRL loads the reference from the model's
  folder), the plain TRL usage;
- ours: `RewardModelStage(...).run()` and `DpoStage(...).run()` with the held-out evals switched off (`eval_size: 0`),
  so what is timed is the training loop with our pair loading and checks, reference model, optimizer and callbacks
  (metrics.jsonl, wall-clock checkpoints).

Equal work: the same pairs in the same order give every step of both runs the same tokens, which the script checks
from TRL's `num_tokens` log and prints. Same load: as in `benchmarks/grpo.py` (whose `Turns` this reuses), bare and
ours run in two threads of one process that take turns a step at a time (the second round starts with ours), and
each step is timed by wall time and by process CPU time from one `on_step_begin` to the next; each run's first step
(warm-up) and last step (ours writes its one checkpoint at the end) are dropped. The ratio is the median over all
step pairs of ours_k / bare_k (target: <= 1.05), with quartiles and a bootstrap 95% interval of the median.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo import Turns, spread  # noqa: E402  (the turn-taking of benchmarks/grpo.py)

TURNS: Turns | None = None
COMMON = dict(batch_size=8, learning_rate=1e-5, max_length=256, seed=0, warmup_ratio=0.1)


def write_pairs(path: Path, num_prompts: int = 200) -> None:
    from data_gen.sources import SourceConfig, load_source

    rng = random.Random(0)
    args = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "allow_negation": False}
    rows = load_source(SourceConfig("reasoning_gym:chain_sum", size=num_prompts, seed=1, args=args)).to_list()
    with path.open("w") as f:
        for row in rows:
            wrong = int(row["answer"]) + rng.choice([-2, -1, 1, 2])
            chosen = f"Let me evaluate it step by step. The answer is \\boxed{{{row['answer']}}}."
            rejected = "To solve this, " + "we add the numbers and " * rng.randint(2, 8) + f"get {wrong}."
            f.write(json.dumps({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected}) + "\n")


@functools.cache
def timed_class(kind: str):
    """The TRL trainer plus a callback handing the turn over at each step boundary; both runs use it. Cached:
    built once, before `run_ours` patches `trl.<Trainer>`, so it never subclasses itself."""
    import trl
    from transformers import TrainerCallback

    base = trl.RewardTrainer if kind == "reward_model" else trl.DPOTrainer

    class TakeTurns(TrainerCallback):
        def __init__(self):
            self.name = threading.current_thread().name

        def on_step_begin(self, args, state, control, **kwargs):
            TURNS.handoff(self.name)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                TURNS.tokens[self.name].append(logs["num_tokens"])

        def on_train_end(self, args, state, control, **kwargs):
            TURNS.handoff(self.name, finished=True)

    class Timed(base):
        def __init__(self, *args: Any, callbacks: list | None = None, **kwargs: Any):
            super().__init__(*args, callbacks=[*(callbacks or []), TakeTurns()], **kwargs)

    return Timed


def _pairs(path: Path):
    import datasets

    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:  # the conversational format our loader gives
        r["prompt"] = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
        r["chosen"] = [{"role": "assistant", "content": r["chosen"]}]
        r["rejected"] = [{"role": "assistant", "content": r["rejected"]}]
    return datasets.Dataset.from_list(rows)


def _bare_args(config_class: Any, out: Path, steps: int, **extra: Any):
    import torch

    return config_class(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=COMMON["batch_size"],
        learning_rate=COMMON["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=COMMON["warmup_ratio"],  # a float below 1 is a ratio of the steps
        max_length=COMMON["max_length"],
        # TRL's own defaults are bf16=True and gradient_checkpointing=True: pass the stage's values instead.
        bf16=False,
        gradient_checkpointing=False,
        seed=COMMON["seed"],
        data_seed=COMMON["seed"],
        logging_steps=1,
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )


def run_bare(kind: str, model: str, steps: int, pairs: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import DPOConfig, RewardConfig

    from posttrain.model.loading import load_model_and_tokenizer, load_tokenizer, resolve_model

    if kind == "reward_model":
        tok = load_tokenizer(model)
        torch.manual_seed(COMMON["seed"])
        net = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(model), num_labels=1, dtype=torch.float32
        )
        args = _bare_args(RewardConfig, out, steps)
    else:
        net, tok = load_model_and_tokenizer(model, for_training=True)
        args = _bare_args(DPOConfig, out, steps, beta=0.1, loss_type=["sigmoid"])
    timed_class(kind)(model=net, args=args, train_dataset=_pairs(pairs), processing_class=tok).train()


def run_ours(kind: str, model: str, steps: int, pairs: Path, out: Path) -> None:
    from unittest import mock

    from data_gen.sources import SourceConfig
    from posttrain.stages.base import StageContext
    from posttrain.stages.dpo import DpoConfig, DpoStage
    from posttrain.stages.reward_model import RewardModelConfig, RewardModelStage

    config_class, stage_class, trainer = {
        "reward_model": (RewardModelConfig, RewardModelStage, "RewardTrainer"),
        "dpo": (DpoConfig, DpoStage, "DPOTrainer"),
    }[kind]
    cfg = config_class(
        data=SourceConfig(f"jsonl:{pairs}"),
        model=model,
        eval_size=0,
        max_steps=steps,
        lr_scheduler="cosine",
        save_steps=10_000,
        save_minutes=0.0,
        logging_steps=1,
        **COMMON,
    )
    with mock.patch(f"trl.{trainer}", timed_class(kind)):  # the stage imports it from trl when it runs
        stage_class(cfg, StageContext(kind, "bench", out, show_progress=False)).run()


def run_round(kind: str, model: str, steps: int, pairs: Path, first: str) -> Turns:
    global TURNS
    runs = {"bare": run_bare, "ours": run_ours}
    TURNS = turns = Turns(first, "ours" if first == "bare" else "bare")
    errors: list[BaseException] = []

    def target(name: str) -> None:
        try:
            turns.begin(name)
            with tempfile.TemporaryDirectory() as tmp:
                runs[name](kind, model, steps, pairs, Path(tmp))
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)
            if name not in turns.done:
                turns.handoff(name, finished=True)

    timed_class(kind)  # import TRL once here rather than inside the first timed step
    threads = [threading.Thread(target=target, args=(name,), name=name) for name in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny (default), embedded, a path or a hub id")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trainers", default="reward_model,dpo")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3: the first and last steps of a run are not timed")
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        write_pairs(pairs)
        print(f"model={args.model} steps={args.steps} rounds={args.rounds} batch=8 pairs max_length=256")
        for kind in args.trainers.split(","):
            lines, ratios = [], {"wall": [], "cpu": []}
            for r in range(args.rounds):
                first = "bare" if r % 2 == 0 else "ours"
                with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # TRL prints every log
                    turns = run_round(kind, args.model, args.steps, pairs, first)
                bare, ours = (turns.seconds[n][1:-1] for n in ("bare", "ours"))
                line = f"{r + 1:<6}{first:8}"
                for i, name in enumerate(ratios):
                    pair_ratios = [o[i] / b[i] for b, o in zip(bare, ours)]
                    ratios[name] += pair_ratios
                    line += (
                        f"{statistics.median(b[i] for b in bare):<8.2f}{statistics.median(o[i] for o in ours):<8.2f}"
                    )
                    line += f"{statistics.median(pair_ratios):<7.3f}"
                tokens = {n: [b - a for a, b in zip([0.0, *t], t)] for n, t in turns.tokens.items()}
                same = "yes" if tokens["bare"] == tokens["ours"] else f"NO: {tokens}"
                lines.append(f"{line}{statistics.median(tokens['bare']):<7.0f}{same}")
            print(f"\n{kind}: trl.{'RewardTrainer' if kind == 'reward_model' else 'DPOTrainer'} vs our stage")
            print("              wall s/step (median)   CPU s/step (median)")
            print("round first   bare    ours    ratio  bare    ours    ratio  tokens/step equal")
            print("\n".join(lines))
            for name, values in ratios.items():
                print(f"ratio ours/bare, {name:4} time, {len(values)} step pairs: {spread(values)} (target <= 1.05)")


if __name__ == "__main__":
    main()
