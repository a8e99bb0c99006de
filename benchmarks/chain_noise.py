"""Run-to-run noise of a chain's evals: re-run the `point:` eval stages of a finished run with other sampling seeds
(same prompts, same models) and print, per eval, the pass@1 of every seed, their standard deviation and the eval's
own stderr over prompts (what the chain table shows as +- 2 stderr), side by side.

    python benchmarks/chain_noise.py recipes/deepseek_v3.yaml --run-dir runs --seeds 1 2 --points base math_expert

The models are the run's own stage outputs (`${stages.X.model}` resolved against --run-dir); the recipe run must be
finished. Each re-run writes to a temporary folder, never into the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--run-dir", default=None, help="where the finished run lives (default: the recipe's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="extra sampling seeds")
    parser.add_argument("--points", nargs="*", default=None, help="eval points to re-run (default: all)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()

    from posttrain.recipe.loader import load_recipe
    from posttrain.stages.base import StageContext

    recipe = load_recipe(args.recipe, run_dir=args.run_dir)
    rows = []
    print(f"{'eval':<22} {'point':<14} {'domain':<7} {'seed ' + str(0):>7} " + " ".join(f"seed {s:>2}" for s in args.seeds)
          + "   std(seeds)  stderr(prompts)   s/eval")  # fmt: skip
    for spec in recipe.stages:
        cfg = spec.config
        if spec.type != "eval" or not cfg.point or (args.points and cfg.point not in args.points):
            continue
        manifest = json.loads((recipe.root / spec.name / "manifest.json").read_text())["metrics"]
        values, seconds = [manifest["pass@1"]], []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                ctx = StageContext(spec.name, recipe.name, Path(tmp), show_progress=False)
                start = time.time()
                metrics = spec.stage_class(dataclasses.replace(cfg, seed=seed), ctx).run()
                seconds.append(time.time() - start)
            values.append(metrics["pass@1"])
        std = statistics.stdev(values)
        domain = cfg.domain or cfg.data.domain
        row = dict(eval=spec.name, point=cfg.point, domain=domain, pass_at_1=values, std=round(std, 4),
                   stderr=manifest.get("pass@1_stderr"), seconds=round(statistics.fmean(seconds), 1))  # fmt: skip
        rows.append(row)
        print(f"{spec.name:<22} {cfg.point:<14} {domain:<7} " + " ".join(f"{v:7.3f}" for v in values)
              + f"   {std:10.3f}  {row['stderr'] or float('nan'):15.3f}   {row['seconds']:6.1f}", flush=True)  # fmt: skip
    if rows:
        pooled = statistics.fmean(r["std"] ** 2 for r in rows) ** 0.5
        print(f"pooled run-to-run std of pass@1 over {len(rows)} evals: {pooled:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
