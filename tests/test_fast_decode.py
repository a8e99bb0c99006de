"""The transformers backend's decode attention and sampler (posttrain/generation/fast_decode.py) against what they
replace: transformers' SDPA attention, torch's categorical distribution and HF's top-p warper."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from posttrain.generation import GeneratorConfig, make_generator  # noqa: E402
from posttrain.generation.fast_decode import InverseCdfSampler, _top_p, decode_attention  # noqa: E402


def _sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def _module(groups: int):
    return SimpleNamespace(training=False, num_key_value_groups=groups, is_causal=True)


@pytest.mark.parametrize("masked", [True, False])
def test_decode_attention_matches_sdpa(masked):
    gen = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, length, dim = 3, 6, 2, 10, 16
    q = torch.randn(batch, heads, 1, dim, generator=gen)
    k = torch.randn(batch, kv_heads, length, dim, generator=gen)
    v = torch.randn(batch, kv_heads, length, dim, generator=gen)
    mask = None
    if masked:  # left padding: row 1 starts at key 3, row 2 at key 7
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        mask[1, ..., :3] = False
        mask[2, ..., :7] = False
    ours, _ = decode_attention(_module(3), q, k, v, mask, scaling=0.25)
    ref, _ = _sdpa(_module(3), q, k, v, mask, scaling=0.25)
    assert ours.shape == ref.shape == (batch, 1, heads, dim)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    if masked:  # the padded keys really are ignored: changing them changes nothing
        k2, v2 = k.clone(), v.clone()
        k2[2, :, :7] += 100.0
        v2[2, :, :7] -= 50.0
        torch.testing.assert_close(decode_attention(_module(3), q, k2, v2, mask, scaling=0.25)[0], ours)


def test_prefill_and_training_are_sdpa_as_is():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 5, 8, generator=gen)
    k, v = torch.randn(2, 2, 5, 8, generator=gen), torch.randn(2, 2, 5, 8, generator=gen)
    assert torch.equal(decode_attention(_module(2), q, k, v, None)[0], _sdpa(_module(2), q, k, v, None)[0])
    training = SimpleNamespace(training=True, num_key_value_groups=2, is_causal=True)
    q1 = q[:, :, :1]
    assert torch.equal(decode_attention(training, q1, k, v, None)[0], _sdpa(training, q1, k, v, None)[0])


def test_greedy_generation_is_unchanged_and_attention_restored(tiny_path, one_thread, monkeypatch):
    import posttrain.generation.transformers_backend as backend

    prompts = [[{"role": "user", "content": "What is 2 + 2?"}], [{"role": "user", "content": "Say a long word."}]]
    gen = make_generator("tiny", GeneratorConfig(backend="transformers", batch_size=4, dtype="float32"))
    seen = []
    restore = backend.restore_attention
    monkeypatch.setattr(
        backend, "restore_attention", lambda m, prev: (seen.append(m.config._attn_implementation), restore(m, prev))
    )
    fast = gen.generate(prompts, n=1, temperature=0, max_tokens=12)
    assert seen == ["posttrain_decode"]  # generated with it ...
    assert gen.model.config._attn_implementation == "sdpa"  # ... and switched back
    monkeypatch.setattr(backend, "use_decode_attention", lambda model: None)
    plain = gen.generate(prompts, n=1, temperature=0, max_tokens=12)
    assert [[s.text for s in p] for p in fast] == [[s.text for s in p] for p in plain]


def test_sampler_draws_from_the_tempered_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf"), 0.5, -3.0, float("-inf")])
    rows = 100_000
    scores = logits.expand(rows, -1).clone()
    out = InverseCdfSampler(temperature=0.7)(None, scores)
    assert torch.isinf(out).sum(dim=1).eq(len(logits) - 1).all()  # one 0 per row, -inf elsewhere
    counts = torch.bincount(out.argmax(dim=1), minlength=len(logits)).double()
    probs = torch.softmax(logits.double() / 0.7, dim=0)
    assert counts[probs == 0].sum() == 0  # tokens of probability 0 never come out
    sigma = (rows * probs * (1 - probs)).sqrt()
    assert ((counts - rows * probs).abs() <= 5 * sigma + 1).all(), (counts / rows, probs)


def test_sampler_is_seeded_like_the_rest_of_torch():
    scores = torch.randn(64, 1000, generator=torch.Generator().manual_seed(3))
    sampler = InverseCdfSampler(temperature=1.0)
    torch.manual_seed(5)
    a = sampler(None, scores).argmax(dim=1)
    torch.manual_seed(5)
    b = sampler(None, scores).argmax(dim=1)
    torch.manual_seed(6)
    c = sampler(None, scores).argmax(dim=1)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("top_p", [0.3, 0.8, 0.95])
def test_top_p_keeps_what_hf_keeps(top_p):
    from transformers import TopPLogitsWarper

    scores = torch.randn(16, 200, generator=torch.Generator().manual_seed(2)) * 3
    ours = torch.isinf(_top_p(scores.clone(), top_p))
    theirs = torch.isinf(TopPLogitsWarper(top_p=top_p)(None, scores.clone()))
    assert torch.equal(ours, theirs)
    assert (~ours).sum(dim=1).min() >= 1


def test_sampler_refuses_zero_temperature():
    with pytest.raises(ValueError, match="temperature"):
        InverseCdfSampler(temperature=0)
