"""Benchmark: the `sft` stage's padding-free batches against padded ones, side by side in one run.

    python benchmarks/sft_padding.py [--batches 6] [--batch-size 8] [--sets math code mixed] [--parquet PATH]

Each set is tokenized the way the `sft` stage does it (`build_samples`, then `tokenize_dataset` with the
chain's `max_length` of 384). The same batches run a forward and backward pass of the embedded model (fp32, as the CPU recipes train) in three
layouts, each going first in turn:
- `padded`: TRL's collator pads each row to the longest (`padding_free: false`);
- `mask`: the rows laid end to end as one sequence (`padding_free: true`) under transformers' SDPA, which builds a
  block-diagonal causal mask over the whole concatenation;
- `segments`: the same sequence under `posttrain_segments` (posttrain/model/segment_attention.py), which attends
  row by row; this is what the `sft` stage runs with `padding_free: true` on an SDPA model.
The script prints per set: real tokens and the padding's share of a padded batch, the median seconds per batch of
each layout, and the median per-batch ratio against `padded` with its range.

Sets:
- `math`: the math expert's <problem, original response> rows (chain_sum, short and of similar length);
- `code`: the code expert's rows (builtin:code_tasks worked solutions, longer and more varied);
- `mixed`: math, logic (aiw) and code rows shuffled together, as in the chain's SFT mix;
- `--parquet PATH`: also a finished mix stage's dataset (rows with `messages`), e.g. runs/deepseek_v3/mix/dataset.

The `mask` layout's attention covers the whole concatenation: O((sum of lengths)^2) work instead of
O(sum of length^2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUMS = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, allow_negation=False)
AIW = {"task_types": ["siblings", "friends"], "task_type_weights": [0.5, 0.5]}
SOURCES = {
    "math": [dict(source="reasoning_gym:chain_sum", size=160, seed=1, args=SUMS)],
    "code": [dict(source="builtin:code_tasks", size=160, seed=1, args={"max_difficulty": 2})],
    "mixed": [
        dict(source="reasoning_gym:chain_sum", size=60, seed=1, args=SUMS),
        dict(source="reasoning_gym:aiw", size=60, seed=1, args=AIW),
        dict(source="builtin:code_tasks", size=120, seed=1, args={"max_difficulty": 2}),
    ],
}


def _examples(name: str, specs: list[dict] | None, parquet: str | None, tokenizer, max_length: int, seed: int):
    import datasets

    from data_gen.sources import SourceConfig, load_source
    from posttrain.stages.sft import build_samples
    from posttrain.training import tokenize_dataset

    if parquet is not None:
        rows = datasets.load_dataset("parquet", data_files=str(Path(parquet) / "*.parquet"), split="train")
        parts = [build_samples(rows, "messages", None, name)]
    else:
        parts = [build_samples(load_source(SourceConfig(**spec)), "auto", None, name) for spec in specs]
    ds = datasets.concatenate_datasets(parts).shuffle(seed=seed)
    ds = tokenize_dataset(ds, tokenizer, max_length, name)
    return [
        {
            "input_ids": r["input_ids"],
            "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])],
        }
        for r in ds
    ]


def _step(model, batch) -> tuple[float, float]:
    start = time.perf_counter()
    loss = model(**batch).loss  # everything the collator gives, as the Trainer passes it
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6, help="batches per set (each timed in both layouts)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--sets", nargs="*", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--parquet", default=None, help="a mix dataset folder to add as the set 'parquet'")
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args()

    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from posttrain.model.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(args.model, for_training=True)
    model.train()
    from posttrain.model.segment_attention import register

    layouts = {  # name: (padding_free, attention implementation)
        "padded": (False, "sdpa"),
        "mask": (True, "sdpa"),
        "segments": (True, register()),
    }
    collate = {pf: DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=pf)
               for pf in (False, True)}  # fmt: skip
    sets = [(name, SOURCES[name], None) for name in args.sets]
    if args.parquet:
        sets.append(("parquet", None, args.parquet))
    print(f"model={args.model} batch_size={args.batch_size} batches={args.batches} max_length={args.max_length} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    print("s = median seconds of a forward and backward pass; x/padded = median of per-batch ratios [min-max]")
    print(f"{'set':<8} {'rows':>5} {'real tok':>9} {'pad %':>6} {'padded s':>9} {'mask s':>7} {'segments s':>10}"
          f"   {'mask/padded':>20} {'segments/padded':>20}  loss rel diff")  # fmt: skip
    for name, specs, parquet in sets:
        rows = _examples(name, specs, parquet, tokenizer, args.max_length, seed=0)
        batches = [rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
        batches = [b for b in batches if len(b) == args.batch_size][: args.batches + 1]
        _step(model, collate[False](batches[0]))  # warm-up, not timed
        times = {layout: [] for layout in layouts}
        real = padded = 0
        worst = 0.0  # largest relative loss difference between layouts on one batch
        for k, rows_ in enumerate(batches[1:]):
            lengths = [len(r["input_ids"]) for r in rows_]
            real, padded = real + sum(lengths), padded + max(lengths) * len(lengths)
            order = list(layouts)[k % 3 :] + list(layouts)[: k % 3]  # each layout goes first in turn
            losses = []
            for layout in order:
                padding_free, attention = layouts[layout]
                model.set_attn_implementation(attention)
                seconds, loss = _step(model, collate[padding_free](rows_))
                times[layout].append(seconds)
                losses.append(loss)
            worst = max(worst, (max(losses) - min(losses)) / abs(losses[0]))
        model.set_attn_implementation("sdpa")

        med = {layout: statistics.median(t) for layout, t in times.items()}
        ratio = {}
        for layout in ("mask", "segments"):
            r = [b / a for a, b in zip(times["padded"], times[layout])]
            ratio[layout] = f"{statistics.median(r):.3f} [{min(r):.2f}-{max(r):.2f}]"
        print(f"{name:<8} {len(rows):>5} {real:>9} {100 * (1 - real / padded):>5.1f}% {med['padded']:>9.2f} "
              f"{med['mask']:>7.2f} {med['segments']:>10.2f}   {ratio['mask']:>20} {ratio['segments']:>20}  {worst:.1e}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
