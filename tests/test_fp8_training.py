"""Acceptance row "tiny LM, FP8 vs BF16 final loss within max(1%, BF16 seed-to-seed spread)" on CPU.

A 2-layer Llama (hidden 128, intermediate 256, k/v 64 so padding is exercised) learns a first-order Markov
language. BF16 means FP32 master weights under bf16 autocast; FP8 is the same with every attention and MLP Linear
converted (the rest still under autocast, as DeepSeek-V3 keeps attention and the head in BF16). The spec's run is
600 steps; 150 keep this test around 15 s on a shared 2-core CPU and still take the held-out loss from 3.47
(uniform) to about 1.82 (entropy floor 1.69). Measured: BF16 seeds 0/1 1.8252 / 1.8155 (spread 0.53%),
FP8 seed 0 1.8198 (-0.30%); FP8 seed 1, not run here, 1.8269 (+0.63% against BF16 seed 1).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from posttrain.model.fp8 import convert_to_fp8

VOCAB, SEQ, BATCH, STEPS, LR = 32, 32, 8, 150, 5e-3


pytestmark = pytest.mark.usefixtures("one_thread")


def markov_corpus(num_seqs: int, seed: int = 1234) -> torch.Tensor:
    """[num_seqs, SEQ] token ids from a fixed random first-order Markov chain (entropy ~1.69 nats)."""
    gen = torch.Generator().manual_seed(seed)
    transitions = (torch.randn(VOCAB, VOCAB, generator=gen) * 2.5).softmax(-1)
    ids = torch.empty(num_seqs, SEQ, dtype=torch.long)
    ids[:, 0] = torch.randint(0, VOCAB, (num_seqs,), generator=gen)
    for t in range(1, SEQ):
        ids[:, t] = torch.multinomial(transitions[ids[:, t - 1]], 1, generator=gen).squeeze(1)
    return ids


def train(fp8: bool, seed: int, data: torch.Tensor, held_out: torch.Tensor) -> float:
    """Train from `seed`, return the held-out loss at the end (the model's own forward, bf16 autocast)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    if fp8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = convert_to_fp8(model, backend="reference")
        assert len(report.converted) == 14
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    for step in range(STEPS):
        batch = data[step * BATCH : (step + 1) * BATCH]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(input_ids=held_out, labels=held_out).loss.item()


def test_fp8_training_matches_bf16_within_seed_spread():
    corpus = markov_corpus(64 + STEPS * BATCH)
    held_out, data = corpus[:64], corpus[64:]
    bf16 = [train(fp8=False, seed=seed, data=data, held_out=held_out) for seed in (0, 1)]
    fp8 = train(fp8=True, seed=0, data=data, held_out=held_out)
    assert bf16[0] < 0.6 * math.log(VOCAB), f"the BF16 baseline did not learn: {bf16}"
    seed_spread = abs(bf16[1] - bf16[0]) / bf16[0]
    gap = abs(fp8 - bf16[0]) / bf16[0]
    assert gap <= max(0.01, seed_spread), f"FP8 {fp8:.4f} vs BF16 {bf16} (gap {gap:.2%}, spread {seed_spread:.2%})"
