"""Benchmark: how well the `llm_judge` reward tells right answers from wrong ones, measured against labels.

    python benchmarks/judge_check.py [--size 160] [--seed 0] [--model embedded] [--out DIR]

Builds a labelled set from reasoning-gym's `basic_arithmetic` (seeded; 2-3 terms of 1-2 digits, as the recipes
use): each question appears twice, once with its gold answer written in a sentence (label true) and once with the
same sentence around a perturbed number (label false: the gold plus or minus 1, 2 or 10, or with two digits
swapped). Then it runs `posttrain rewards check llm_judge --data F --label correct` (reference mode: the judge sees
the question, the gold and the response) with the judge model on CPU, and, as a control, `posttrain rewards check
math` on the same file. Both print agreement, the confusion table, and for the judge the ROC AUC and best threshold.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCES = (
    "The answer is {}.",
    "After working it out step by step, I get {}.",
    "So the result of the calculation is {}.",
    "{}",
    "Adding and subtracting from left to right gives {}.",
    "The expression evaluates to {}.",
)


def perturbed(gold: int, rng: random.Random) -> int:
    """A wrong answer close to the gold: off by 1, 2 or 10, or two digits swapped."""
    while True:
        digits = str(abs(gold))
        if len(digits) > 1 and rng.random() < 0.25:
            i = rng.randrange(len(digits) - 1)
            swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
            wrong = int(swapped) * (-1 if gold < 0 else 1)
        else:
            wrong = gold + rng.choice((-10, -2, -1, 1, 2, 10))
        if wrong != gold:
            return wrong


def build_rows(size: int, seed: int) -> list[dict]:
    """`size` labelled rows (half true, half false) from `size // 2` basic_arithmetic questions."""
    import reasoning_gym

    args = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}
    entries = reasoning_gym.create_dataset("basic_arithmetic", size=size // 2, seed=seed, **args)
    rng = random.Random(seed)
    rows = []
    for entry in entries:
        gold = int(entry["answer"])
        sentence = rng.choice(SENTENCES)
        for value, label in ((gold, True), (perturbed(gold, rng), False)):
            rows.append(
                {
                    "prompt": entry["question"],
                    "answer": str(gold),
                    "completion": sentence.format(value),
                    "correct": label,
                }
            )
    return rows


def check(reward: str, data: Path, params: list[str]) -> str:
    """Run `posttrain rewards check REWARD` on `data` in a subprocess and return what it printed."""
    cmd = [
        sys.executable,
        "-m",
        "posttrain.cli",
        "rewards",
        "check",
        reward,
        "--data",
        str(data),
        "--label",
        "correct",
    ]
    for p in params:
        cmd += ["--param", p]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout.rstrip() + f"\n  (wall time with model load: {time.perf_counter() - start:.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=160, help="labelled rows (half true, half false)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="embedded", help="the judge: embedded, a local folder or a hub id")
    parser.add_argument("--out", help="folder for the labelled file (default: a temporary one)")
    args = parser.parse_args()

    rows = build_rows(args.size, args.seed)
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="judge_check_"))
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"basic_arithmetic_labelled_{args.size}_seed{args.seed}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"labelled set: {data} ({len(rows)} rows, {sum(r['correct'] for r in rows)} true)\n")
    print(check("llm_judge", data, ["mode=reference", f"model={args.model}"]))
    print()
    print(check("math", data, []))


if __name__ == "__main__":
    main()
