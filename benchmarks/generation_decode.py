"""Benchmark: the transformers backend's CPU decode path (`posttrain/generation/fast_decode.py`) against transformers'
defaults, on the chain's own eval sets, side by side in one run.

    python benchmarks/generation_decode.py [--seeds 3] [--sets math code logic] [--model embedded]

For each eval set of `recipes/deepseek_v3.yaml` (its prompts, sampling settings and reward), each seed runs both
variants in turn, alternating which goes first:
- `hf`: `model.generate` as transformers does it (SDPA attention with `repeat_kv` under a padding mask,
  `torch.multinomial` sampling), i.e. `TransformersGenerator` with `FAST_CPU_DECODE = False`;
- `ours`: the same generator with the decode attention and the inverse-CDF sampler.
It prints, per set and variant, the generation seconds (model loaded once, excluded), generated tokens per second
and pass@1, each as mean over seeds with its spread. The two variants draw different samples (another random
stream), so pass@1 may differ by sampling noise only: the seeds' spread is the yardstick. The speed ratio is
hf seconds / ours seconds of the same seed, median over seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUMS = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, allow_negation=False)
SETS = {  # as in recipes/deepseek_v3.yaml
    "math": (
        dict(source="reasoning_gym:chain_sum", size=32, seed=1001, args=SUMS),
        [{"name": "math"}],
        dict(n=2, temperature=0.5, max_tokens=64),
    ),
    "logic": (
        dict(
            source="reasoning_gym:aiw",
            size=32,
            seed=1001,
            args={"task_types": ["siblings", "friends"], "task_type_weights": [0.5, 0.5]},
        ),
        [{"name": "math"}],
        dict(n=2, temperature=0.5, max_tokens=64),
    ),
    "code": (
        dict(source="builtin:code_tasks", size=24, seed=1001, args={"max_difficulty": 2}),
        [{"name": "code", "timeout_s": 2}],
        dict(n=2, temperature=0.5, max_tokens=128),
    ),
}


def _spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--model", default="embedded")
    a = parser.parse_args()

    import posttrain.generation.transformers_backend as backend
    from data_gen.sources import SourceConfig, load_source
    from posttrain.evaluation import evaluate
    from posttrain.generation import GeneratorConfig, make_generator
    from rewards import build_reward

    generator = make_generator(a.model, GeneratorConfig(backend="transformers"))
    print(f"model {a.model}, dtype {generator.model.dtype}, {a.seeds} seeds per set")
    print(f"{'set':6} {'variant':8} {'seconds':>16} {'tokens/s':>18} {'pass@1':>16}   hf/ours s (per seed)")
    for name in a.sets:
        source, rewards, sampling = SETS[name]
        rows = load_source(SourceConfig(**source)).to_list()
        reward = build_reward(rewards, name)
        results: dict[str, list[dict]] = {"hf": [], "ours": []}
        for seed in range(a.seeds):
            order = ["hf", "ours"] if seed % 2 == 0 else ["ours", "hf"]
            for variant in order:
                backend.FAST_CPU_DECODE = variant == "ours"
                start = time.perf_counter()
                metrics, records = evaluate(generator, rows, reward, seed=seed, **sampling)
                seconds = time.perf_counter() - start
                tokens = sum(r["num_tokens"] for r in records)
                results[variant].append(dict(s=seconds, tps=tokens / seconds, p=metrics["pass@1"]))
        backend.FAST_CPU_DECODE = True
        ratios = [h["s"] / o["s"] for h, o in zip(results["hf"], results["ours"])]
        for variant in ("hf", "ours"):
            r = results[variant]
            tail = (
                f"   {statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})"
                if variant == "ours"
                else ""
            )
            print(
                f"{name:6} {variant:8} {_spread([x['s'] for x in r]):>16} {_spread([x['tps'] for x in r]):>18} "
                f"{_spread([x['p'] for x in r]):>16}{tail}",
                flush=True,
            )
    generator.close()


if __name__ == "__main__":
    main()
