"""Benchmark: step time of our `grpo` stage against bare TRL GRPOTrainer with the same config, in one run.

    python benchmarks/grpo.py [--model tiny|embedded] [--steps 6] [--rounds 2]

Both train the same model on the same prompts (reasoning-gym chain_sum) with the same GRPOConfig values, the
`math` reward, transformers generation on CPU, and the same seed:
- bare: `GRPOTrainer(model, reward_funcs=[math_reward], args=GRPOConfig(...))`, the plain TRL usage;
- ours: `GrpoStage(GrpoConfig(...), ctx).run()` with the held-out eval switched off, so what is timed is the
  training loop with our reward wrappers (metrics, completion log), callbacks (metrics.jsonl, wall-clock
  checkpoints) and optimizer.

Equal work: both sample with `generation_kwargs={"min_new_tokens": 24}` (EOS is masked until the 24th token), so
every completion has exactly `max_completion_length` tokens whatever the weights, and each step of either run
processes the same number of tokens (checked from TRL's `num_tokens` and printed).

Same load: each round runs bare and ours at once in two threads of one process that take turns a step at a time
(bare step 1, ours step 1, bare step 2, ...; the round after, ours goes first), so the other processes on the
machine slow both steps of a pair alike. A step's time runs from one `on_step_begin` to the next, so it includes
generation, rewards, loss, optimizer, logging and every callback; it is taken both as wall time and as the
process's CPU time (only one run is active at a time, so that is the step's own), which other processes inflate
much less. Each run's first step (warm-up) and last step (it ends at `on_train_end`, after the final checkpoint
that ours writes once per run) are dropped. The ratio is the median over all step pairs of ours_k / bare_k
(target: <= 1.05), with the quartiles of those ratios and a bootstrap 95% interval of the median.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ARGS = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, allow_negation=False)
NEW_TOKENS = 24


def common(model: str, steps: int) -> dict:
    return dict(
        max_steps=steps,
        batch_size=8,
        num_generations=4,
        max_completion_length=NEW_TOKENS,
        generation_kwargs={"min_new_tokens": NEW_TOKENS},
        temperature=0.8,
        learning_rate=1e-5,
        seed=0,
        model=model,
        bf16=False,
        gradient_checkpointing=False,
    )


class Turns:
    """Two training runs in two threads (named after the runs) take turns a step at a time; records each step's
    wall and CPU seconds and the `num_tokens` each run logged. Only the thread whose turn it is runs, so they never
    contend, and the process's CPU time over a step is that step's alone."""

    def __init__(self, first: str, second: str):
        self.cond = threading.Condition()
        self.turn = first
        self.other = {first: second, second: first}
        self.done: set[str] = set()
        self.started: dict[str, tuple[float, float]] = {}
        self.seconds: dict[str, list[tuple[float, float]]] = {first: [], second: []}
        self.tokens: dict[str, list[float]] = {first: [], second: []}

    def _wait(self, name: str) -> None:
        self.cond.wait_for(lambda: self.turn == name or self.other[name] in self.done)

    def begin(self, name: str) -> None:
        with self.cond:
            self._wait(name)

    def handoff(self, name: str, finished: bool = False) -> None:
        """End this run's current step (if one is timed) and let the other run do one step."""
        if name in self.started:
            wall, cpu = self.started.pop(name)
            self.seconds[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        with self.cond:
            other = self.other[name]
            if finished:
                self.done.add(name)
            if other not in self.done:
                self.turn = other
            self.cond.notify_all()
            if finished:  # untimed teardown waits until the other run has no timed steps left
                self.cond.wait_for(lambda: other in self.done)
                return
            self._wait(name)
        self.started[name] = (time.perf_counter(), time.process_time())


TURNS: Turns | None = None


@functools.cache
def timed_trainer_class():
    """GRPOTrainer plus a callback handing the turn over at each step boundary; both runs use it. Cached: built
    once, before `run_ours` patches `trl.GRPOTrainer`, so it never subclasses itself."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

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

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, callbacks: list | None = None, **kwargs: Any):
            super().__init__(*args, callbacks=[*(callbacks or []), TakeTurns()], **kwargs)

    return TimedGRPOTrainer


def run_bare(c: dict, out: Path) -> None:
    import torch
    from trl import GRPOConfig

    from data_gen.sources import SourceConfig, load_source
    from posttrain.model.loading import load_model_and_tokenizer
    from rewards.math_reward import math_reward

    torch.manual_seed(c["seed"])
    model, tok = load_model_and_tokenizer(c["model"], for_training=True)
    data = load_source(SourceConfig(source="reasoning_gym:chain_sum", size=200, seed=1, args=ARGS))
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=c["max_steps"],
        per_device_train_batch_size=c["batch_size"],
        num_generations=c["num_generations"],
        max_completion_length=c["max_completion_length"],
        generation_kwargs=c["generation_kwargs"],
        temperature=c["temperature"],
        learning_rate=c["learning_rate"],
        lr_scheduler_type="constant",
        # TRL's own defaults are bf16=True and gradient_checkpointing=True: pass the stage's values instead.
        bf16=c["bf16"],
        gradient_checkpointing=c["gradient_checkpointing"],
        seed=c["seed"],
        data_seed=c["seed"],
        logging_steps=1,
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = timed_trainer_class()(
        model=model, reward_funcs=[math_reward], args=args, train_dataset=data, processing_class=tok
    )
    trainer.train()


def run_ours(c: dict, out: Path) -> None:
    from unittest import mock

    from data_gen.sources import SourceConfig
    from posttrain.stages.base import StageContext
    from posttrain.stages.grpo import GrpoConfig, GrpoStage

    cfg = GrpoConfig(
        data=SourceConfig(source="reasoning_gym:chain_sum", size=200, seed=1, args=ARGS),
        rewards=[{"name": "math"}],
        eval_size=0,
        save_steps=10_000,
        save_minutes=0.0,
        **c,
    )
    # The stage imports GRPOTrainer from trl when it runs: this hands it the same timed subclass bare uses.
    with mock.patch("trl.GRPOTrainer", timed_trainer_class()):
        GrpoStage(cfg, StageContext("rl", "bench", out, show_progress=False)).run()


def run_round(c: dict, first: str) -> Turns:
    """Bare and ours in two threads taking turns step by step; `first` starts."""
    global TURNS
    runs = {"bare": run_bare, "ours": run_ours}
    TURNS = turns = Turns(first, "ours" if first == "bare" else "bare")
    errors: list[BaseException] = []

    def target(name: str) -> None:
        try:
            turns.begin(name)
            with tempfile.TemporaryDirectory() as tmp:
                runs[name](c, Path(tmp))
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)
            if name not in turns.done:
                turns.handoff(name, finished=True)

    timed_trainer_class()  # import TRL once here rather than inside the first timed step
    threads = [threading.Thread(target=target, args=(name,), name=name) for name in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return turns


def spread(ratios: list[float], num: int = 2000) -> str:
    """Median of the pair ratios, their quartiles, and a bootstrap 95% interval of the median."""
    if len(ratios) < 2:
        return f"median {statistics.median(ratios):.3f} (too few pairs for a spread)"
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(num))
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return (
        f"median {statistics.median(ratios):.3f}, quartiles {q1:.3f}-{q3:.3f}, "
        f"95% CI of median {meds[int(0.025 * num)]:.3f}-{meds[int(0.975 * num) - 1]:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny (default), embedded, a path or a hub id")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3: the first and last steps of a run are not timed")
    c = common(args.model, args.steps)
    lines, ratios = [], {"wall": [], "cpu": []}
    for r in range(args.rounds):
        first = "bare" if r % 2 == 0 else "ours"
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # TRL prints every log row
            turns = run_round(c, first)
        bare, ours = (turns.seconds[n][1:-1] for n in ("bare", "ours"))
        line = f"{r + 1:<6}{first:8}"
        for i, kind in enumerate(ratios):
            pairs = [o[i] / b[i] for b, o in zip(bare, ours)]
            ratios[kind] += pairs
            line += f"{statistics.median(b[i] for b in bare):<8.2f}{statistics.median(o[i] for o in ours):<8.2f}"
            line += f"{statistics.median(pairs):<7.3f}"
        tokens = {n: [b - a for a, b in zip([0.0, *t], t)] for n, t in turns.tokens.items()}
        same = "yes" if tokens["bare"] == tokens["ours"] else f"NO: {tokens}"
        lines.append(f"{line}{statistics.median(tokens['bare']):<7.0f}{same}")
    print(f"model={args.model} steps={args.steps} rounds={args.rounds} batch=8 generations=4 new_tokens={NEW_TOKENS}")
    print("              wall s/step (median)   CPU s/step (median)")
    print("round first   bare    ours    ratio  bare    ours    ratio  tokens/step equal")
    print("\n".join(lines))
    for kind, values in ratios.items():
        print(f"ratio ours/bare, {kind:4} time, {len(values)} step pairs: {spread(values)} (target <= 1.05)")


if __name__ == "__main__":
    main()
