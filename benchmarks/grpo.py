"""Benchmark: step time of our `grpo` stage against bare TRL GRPOTrainer with the same config, in one run.

    python benchmarks/grpo.py [--model tiny|embedded] [--steps 6] [--rounds 2]

Both train the same model on the same prompts (reasoning-gym chain_sum) with the same GRPOConfig values, the
`math` reward, transformers generation on CPU, and the same seed:
- bare: `GRPOTrainer(model, reward_funcs=[math_reward], args=GRPOConfig(...))`, the plain TRL usage;
- ours: `GrpoStage(GrpoConfig(...), ctx).run()` with the held-out eval switched off, so what is timed is the
  training loop with our reward wrappers (metrics, completion log), callbacks (metrics.jsonl, wall-clock
  checkpoints) and optimizer.
A step's time is the gap between consecutive logged steps (the first step, which warms up, is dropped); the
median over steps is reported per run, also per 1000 tokens, since the two runs' sampled lengths drift apart once
their weights do, and the runs alternate bare / ours `--rounds` times so that load from
other processes hits both alike. The ratio is ours / bare (target: <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ARGS = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, allow_negation=False)


def common(model: str, steps: int) -> dict:
    return dict(
        max_steps=steps,
        batch_size=8,
        num_generations=4,
        max_completion_length=24,
        temperature=0.8,
        learning_rate=1e-5,
        seed=0,
        model=model,
        bf16=False,
        gradient_checkpointing=False,
    )


def median_step_s(times: list[float], tokens: list[float]) -> tuple[float, float]:
    """Median seconds per step and per 1000 tokens (prompt + completion; `num_tokens` is cumulative)."""
    gaps = [(b - a, (nb - na) / 1000) for a, b, na, nb in zip(times, times[1:], tokens, tokens[1:])]
    gaps = gaps[1:] if len(gaps) > 2 else gaps
    return statistics.median(g for g, _ in gaps), statistics.median(g / k for g, k in gaps)


def run_bare(c: dict, out: Path) -> tuple[float, float]:
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from data_gen.sources import SourceConfig, load_source
    from posttrain.model.loading import load_model_and_tokenizer
    from rewards.math_reward import math_reward

    times: list[float] = []
    tokens: list[float] = []

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                times.append(time.time())
                tokens.append(logs["num_tokens"])

    torch.manual_seed(c["seed"])
    model, tok = load_model_and_tokenizer(c["model"], for_training=True)
    data = load_source(SourceConfig(source="reasoning_gym:chain_sum", size=200, seed=1, args=ARGS))
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=c["max_steps"],
        per_device_train_batch_size=c["batch_size"],
        num_generations=c["num_generations"],
        max_completion_length=c["max_completion_length"],
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
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[math_reward],
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=[Clock()],
    )
    trainer.train()
    return median_step_s(times, tokens)


def run_ours(c: dict, out: Path) -> tuple[float, float]:
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
    GrpoStage(cfg, StageContext("rl", "bench", out, show_progress=False)).run()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    return median_step_s([r["time"] for r in rows], [r["num_tokens"] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny (default), embedded, a path or a hub id")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    c = common(args.model, args.steps)
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": []}
    for _ in range(args.rounds):
        for name, fn in (("bare", run_bare), ("ours", run_ours)):
            with tempfile.TemporaryDirectory() as tmp:
                results[name].append(fn(c, Path(tmp)))
    med = {name: [statistics.median(v[i] for v in values) for i in (0, 1)] for name, values in results.items()}
    print(f"model={args.model} steps={args.steps} rounds={args.rounds} batch=8 generations=4 new_tokens=24")
    print("run   median s/step per round   median s/1k tokens per round")
    for name, values in results.items():
        print(f"{name:5} {' '.join(f'{v[0]:.3f}' for v in values):26}{' '.join(f'{v[1]:.3f}' for v in values)}")
    print(f"ratio ours/bare: {med['ours'][0] / med['bare'][0]:.3f} per step, ", end="")
    print(f"{med['ours'][1] / med['bare'][1]:.3f} per token (target <= 1.05)")


if __name__ == "__main__":
    main()
