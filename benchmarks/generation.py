"""Benchmark: rejection-sampling throughput against bare generation, per backend, measured side by side in one run.

    python benchmarks/generation.py [--backend vllm|transformers|both] [--prompts 64] [--n 4] [--max-tokens 96]
                                    [--shard-size 32] [--rounds 2]

The same prompts (reasoning-gym chain_sum with the stage's default R1 system prompt, the embedded model) and sampling
settings go through:
- bare vLLM: `llm.chat(prompts, SamplingParams(...))` on all prompts at once, the plain vLLM usage;
- ours (vLLM): `data_gen.shards.run_shards` with the `VllmGenerator` around the same engine, i.e. the stage's work:
  shards of `--shard-size` prompts, the `math` reward, every filter, the keep policy, Parquet writes and commits;
- bare transformers: batched `model.generate` with left padding and `num_return_sequences`;
- ours (transformers): `run_shards` with the `TransformersGenerator` around the same model.
Throughput is generated tokens / wall seconds (engine start-up and model loading excluded, on both sides). The two
sides sample different completions, so tokens/s rather than seconds is compared. Runs alternate bare / ours
`--rounds` times so that load from other processes hits both alike; the ratio is ours / bare of the medians
(target for vLLM on CPU: >= 0.9).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ARGS = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, allow_negation=False)


def load_rows(num_prompts: int) -> list[dict]:
    from data_gen.sources import SourceConfig, load_source

    return load_source(SourceConfig(source="reasoning_gym:chain_sum", size=num_prompts, seed=5, args=ARGS)).to_list()


def ours(generator, rows: list[dict], a: argparse.Namespace, seed: int) -> float:
    """Tokens/s of the stage's work: generate, score, filter, keep and write shards."""
    from data_gen.rejection import FilterConfig
    from data_gen.shards import run_shards
    from posttrain.generation import SamplingConfig
    from rewards import build_reward

    reward = build_reward([{"name": "math"}])
    sampling = SamplingConfig(n=a.n, temperature=1.0, max_tokens=a.max_tokens)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        counts = run_shards(
            generator,
            rows,
            reward,
            Path(out),
            shard_size=a.shard_size,
            seed=seed,
            show_progress=False,
            sampling=sampling,
            filters=FilterConfig(),
        )
        return counts["num_tokens"] / (time.perf_counter() - start)


def stage_prompts(rows: list[dict]) -> list[list[dict]]:
    """The prompts exactly as the stage sends them: with its default R1 system prompt."""
    from data_gen.rejection import R1_SYSTEM_PROMPT
    from posttrain.generation.base import with_system_prompt

    return [with_system_prompt(r["prompt"], R1_SYSTEM_PROMPT) for r in rows]


def bare_vllm(llm, rows: list[dict], a: argparse.Namespace) -> float:
    from vllm import SamplingParams

    params = SamplingParams(n=a.n, temperature=1.0, max_tokens=a.max_tokens)
    start = time.perf_counter()
    outputs = llm.chat(stage_prompts(rows), params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(c.token_ids) for o in outputs for c in o.outputs) / seconds


def bare_transformers(model, tok, rows: list[dict], a: argparse.Namespace, batch_size: int) -> float:
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in stage_prompts(rows)]
    tok.padding_side = "left"
    per_batch = max(1, batch_size // a.n)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), per_batch):
            batch = tok(texts[i : i + per_batch], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                max_new_tokens=a.max_tokens,
                num_return_sequences=a.n,
                pad_token_id=tok.pad_token_id,
            )
            new = out[:, batch["input_ids"].shape[1] :]
            # Count up to and including the end token, as both backends do.
            ended = (new == tok.eos_token_id).int()
            first_end = torch.where(ended.any(1), ended.argmax(1) + 1, torch.full_like(ended[:, 0], new.shape[1]))
            tokens += int(first_end.sum())
    return tokens / (time.perf_counter() - start)


def compare(name: str, bare, ours_fn, rounds: int) -> None:
    results: dict[str, list[float]] = {"bare": [], "ours": []}
    for r in range(rounds):
        results["bare"].append(bare())
        results["ours"].append(ours_fn(r))
        print(f"  round {r}: bare {results['bare'][-1]:.1f} tok/s, ours {results['ours'][-1]:.1f} tok/s", flush=True)
    b, o = statistics.median(results["bare"]), statistics.median(results["ours"])
    print(f"{name}: bare {b:.1f} tok/s, ours {o:.1f} tok/s, ratio ours/bare {o / b:.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["vllm", "transformers", "both"], default="both")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hf-prompts", type=int, default=16, help="prompts for the (slower) transformers comparison")
    p.add_argument("--hf-batch-size", type=int, default=64)
    a = p.parse_args()
    from posttrain.generation import GeneratorConfig, make_generator

    print(f"{a.prompts} prompts x {a.n} samples, max {a.max_tokens} tokens, shards of {a.shard_size} prompts")
    if a.backend in ("vllm", "both"):
        rows = load_rows(a.prompts)
        gen = make_generator("embedded", GeneratorConfig(backend="vllm"))
        bare_vllm(gen.llm, rows[:4], a)  # warm-up
        compare("vllm", lambda: bare_vllm(gen.llm, rows, a), lambda r: ours(gen, rows, a, seed=r), a.rounds)
        gen.close()
    if a.backend in ("transformers", "both"):
        rows = load_rows(a.hf_prompts)
        gen = make_generator("embedded", GeneratorConfig(backend="transformers", batch_size=a.hf_batch_size))
        compare(
            "transformers",
            lambda: bare_transformers(gen.model, gen.tokenizer, rows, a, a.hf_batch_size),
            lambda r: ours(gen, rows, a, seed=r),
            a.rounds,
        )


if __name__ == "__main__":
    main()
