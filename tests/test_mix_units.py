"""The mix builder's parts on literal inputs: chat validation, text normalisation and hashes, MinHash and LSH,
the decontamination index, sampling."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from data_gen.mix.decontam import build_index
from data_gen.mix.hashing import (
    TextBuffer,
    Windows,
    band_hashes,
    candidate_probability,
    exact_hashes,
    lsh_params,
    minhash,
    mix64,
    permutations,
    window_hashes,
    word_hashes,
)
from data_gen.mix.options import MixSource
from data_gen.mix.quality import validate_chat
from data_gen.mix.sample import draw, targets
from posttrain.errors import DataError


def _flat(conversations: list[list[tuple[str, str]]]):
    roles = pa.array([r for c in conversations for r, _ in c], pa.string())
    contents = pa.array([t for c in conversations for _, t in c], pa.string())
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in conversations])]).astype(np.int64)
    return roles, contents, offsets


def test_validate_chat_reasons():
    convs = [
        [("user", "hi"), ("assistant", "hello")],
        [("system", "be brief"), ("user", "hi"), ("assistant", "yo"), ("user", "bye"), ("assistant", "bye")],
        [],
        [("user", "hi"), ("robot", "beep")],
        [("user", "hi"), ("assistant", " \n ")],
        [("user", "a"), ("user", "b"), ("assistant", "c")],
        [("user", "a"), ("system", "late"), ("assistant", "c")],
        [("user", "hi")],
        [("assistant", "unprompted")],
    ]
    assert validate_chat(*_flat(convs)).tolist() == [0, 0, 1, 2, 3, 4, 4, 5, 4]


def test_exact_hash_normalises_case_and_whitespace_but_keeps_punctuation_and_roles():
    convs = [
        [("user", "What is 2+2?"), ("assistant", "It is 4.")],
        [("user", "  what IS\t2+2? "), ("assistant", "It   is 4.\n")],
        [("user", "What is 2-2?"), ("assistant", "It is 4.")],
        [("assistant", "What is 2+2?"), ("user", "It is 4.")],
        [("user", "What is 2+2? It is 4.")],
    ]
    h = exact_hashes(*_flat(convs))
    assert h[0] == h[1] and len(set(h.tolist())) == 4


def test_word_hashes_split_on_punctuation_and_lower_case():
    a, _ = word_hashes(pa.array(["Hello, World! déjà-vu 42"]))
    b, msg = word_hashes(pa.array(["hello world", "DÉJÀ vu 42"]))
    assert len(a) == 5 and a.tolist() == b.tolist() and msg.tolist() == [0, 0, 1, 1, 1]


def test_window_hashes_match_a_direct_polynomial_and_stay_inside_groups():
    h = mix64(np.arange(1, 12, dtype=np.uint64))
    groups = np.array([0] * 7 + [1] * 2 + [2] * 2)
    grams, owner = window_hashes(h, groups, 3, whole_short=True)
    assert owner.tolist() == [0, 0, 0, 0, 0, 1, 2]
    base = 0x9E3779B97F4A7C15

    def direct(words: np.ndarray) -> int:
        return sum(int(w) * pow(base, j, 2**64) for j, w in enumerate(words)) % 2**64

    assert grams[1] == direct(h[1:4]) and grams[5] == direct(h[7:9])
    assert Windows(h, groups).of(3)[1].tolist() == [0, 0, 0, 0, 0]


def _shingle_signature(texts: list[str], num_perm: int = 112):
    hashes, groups = word_hashes(pa.array(texts))
    shingles, owner = window_hashes(hashes, groups, 5, whole_short=True)
    return minhash(shingles, owner, len(texts), permutations(num_perm))


def test_minhash_estimates_jaccard_and_lsh_catches_near_duplicates():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5000)]
    base = list(rng.choice(words, 200))
    near = base.copy()
    near[100] = "changed"  # one word in 200: Jaccard of 5-word shingles ~ 0.95
    far = list(rng.choice(words, 200))
    sig = _shingle_signature([" ".join(base), " ".join(near), " ".join(far)])
    agreement = (sig[0] == sig[1]).mean()
    assert 0.85 < agreement <= 1.0 and (sig[0] == sig[2]).mean() < 0.05
    bands, rows = lsh_params(0.85, 112)
    assert (bands, rows) == (12, 9) and candidate_probability(0.85, bands, rows) >= 0.95
    b = band_hashes(sig, bands, rows)
    assert (b[0] == b[1]).any() and not (b[0] == b[2]).any()


@pytest.mark.parametrize("threshold", [0.7, 0.8, 0.85, 0.9, 0.95])
def test_lsh_params_reach_the_recall_at_the_threshold(threshold):
    bands, rows = lsh_params(threshold, 128)
    assert bands * rows <= 128 and candidate_probability(threshold, bands, rows) >= 0.95
    assert candidate_probability(threshold - 0.2, bands, rows) < 0.6


def test_decontam_index_ignores_template_ngrams_and_matches_short_items_whole():
    template = "please give the final answer as a single number without any units or extra words at all"
    items = [f"{template} question {i} about {i * 7} apples and {i * 3} pears in a basket" for i in range(5)]
    items.append("how many legs does a spider have")  # 7 words: shorter than min_ngram, skipped
    items.append("name the largest planet of the solar system")  # 8 words: matched whole
    index = build_index([f"e{i}" for i in range(len(items))], items, ngram=13, min_ngram=8, max_items=2)
    assert index.num_skipped == 1 and index.num_template_ngrams > 0
    docs = [
        f"intro {template} outro",  # template text only: not contamination
        f"so {items[3]} thanks",
        "quiz: name the largest planet of the solar system, please",
        "how many legs does a spider have",
    ]
    hashes, groups = word_hashes(pa.array(docs))
    found = index.match(Windows(hashes, groups), len(docs))
    assert found.tolist() == [-1, 3, 6, -1]


def test_decontam_matches_a_short_prompt_without_its_answer_nor_another_operator():
    """An eval item's parts are indexed apart: a short prompt matches the training row that asks it, though the
    item's prompt and answer together appear in no training conversation; the same numbers under the other
    operator are another question, not a match (the words once dropped operators: "4 + 3" was "4 - 3")."""
    from data_gen.mix.decontam import eval_texts
    from data_gen.mix.options import Decontam
    from data_gen.sources import SourceConfig

    sums = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "allow_negation": False}
    src = SourceConfig(source="reasoning_gym:chain_sum", size=4, seed=1001, args=sums)
    names, texts = eval_texts(Decontam(against=[src]))
    prompt, answer = texts[0]
    assert prompt.endswith("=") and answer.lstrip("-").isdigit()
    index = build_index(names, texts, ngram=13, min_ngram=8, max_items=2)
    assert index.num_skipped == 0
    other = prompt.replace(" + ", " # ").replace(" - ", " + ").replace(" # ", " - ")
    assert other != prompt
    docs = [
        "You are a careful problem solver.",
        prompt,
        f"<think>Adding the two numbers gives {answer}; checked.</think> The answer is {answer}.",
        other,
        f"<think>{answer}</think> {answer}",
    ]
    hashes, message = word_hashes(pa.array(docs))
    groups = np.array([0, 0, 0, 1, 1])[message]
    assert index.match(Windows(hashes, groups), 2).tolist() == [0, -1]


def test_words_keep_operators_and_join_hyphenated_words():
    def words(text: str) -> list[bytes]:
        buf = TextBuffer(pa.array([text]))
        return [buf.raw[a:b] for a, b in zip(*buf.words())]

    assert words("4 + 3 = 7") == [b"4", b"+", b"3", b"=", b"7"]
    assert words("a well-known x-ray, 4-3, -5 and 2*x^2/y%") == [
        b"a", b"well", b"known", b"x", b"ray", b"4", b"-", b"3", b"-", b"5", b"and",
        b"2", b"*", b"x", b"^", b"2", b"/", b"y", b"%",
    ]  # fmt: skip
    a, _ = word_hashes(pa.array(["What is 4 + 3?"]))
    b, _ = word_hashes(pa.array(["What is 4 - 3?"]))
    c, msg = word_hashes(pa.array(["what is 4", "+ 3"]))
    assert a.tolist() != b.tolist() and a.tolist() == c.tolist() and msg.tolist() == [0, 0, 0, 1, 1]


def test_targets_split_the_size_by_weight_and_counts():
    sources = [MixSource(data="a", weight=2), MixSource(data="b", count=10), MixSource(data="c")]
    assert targets(sources, [100, 100, 100], 100) == [60, 10, 30]
    assert targets([MixSource(data="a"), MixSource(data="b", count=3)], [7, 9], None) == [7, 3]
    with pytest.raises(DataError, match="source 'b': no rows left after the quality steps"):
        targets(sources, [100, 0, 100], 100)


def test_draw_upsamples_every_row_before_repeating_any_twice():
    rng = np.random.default_rng(0)
    copies = draw(10, 25, rng)
    assert copies.sum() == 25 and copies.min() == 2 and copies.max() == 3 and (copies == 3).sum() == 5
    assert draw(10, 4, rng).tolist().count(1) == 4


def test_first_occurrences_match_a_dict_even_when_keys_share_their_top_bits():
    from data_gen.mix.pool import first_occurrences

    rng = np.random.default_rng(0)
    # Keys that differ only in their low bits (where the sort puts the row's rank) and keys that repeat.
    keys = (rng.integers(0, 40, 5000).astype(np.uint64) << np.uint64(40)) | rng.integers(0, 3, 5000).astype(np.uint64)
    rows = np.arange(5000, dtype=np.int64) * 3
    seen, want_dup, want_first = {}, [], []
    for k, r in zip(keys.tolist(), rows.tolist()):
        if k in seen:
            want_dup.append(r)
            want_first.append(seen[k])
        else:
            seen[k] = r
    for partition in (10**9, 1700):  # one pass, and several passes split by key value
        dup, first = first_occurrences(lambda: iter([(keys, rows)]), len(keys), partition)
        assert dup.tolist() == want_dup and first.tolist() == want_first


def test_positions_are_one_permutation_whatever_the_ranges():
    from data_gen.mix.sample import positions

    for n in (1, 5, 999, 70_000):
        whole = positions(0, n, n, seed=4)
        assert np.array_equal(np.sort(whole), np.arange(n))
        cut = n // 3
        assert np.array_equal(np.concatenate([positions(0, cut, n, 4), positions(cut, n - cut, n, 4)]), whole)
    assert not np.array_equal(positions(0, 999, 999, 4), positions(0, 999, 999, 5))


def test_unicode_whitespace_and_message_boundaries_in_the_byte_tokens():
    convs = [
        [("user", "what\u00a0is\u30002+2?"), ("assistant", "it is 4.")],
        [("user", "what is 2+2?"), ("assistant", "it is 4.")],
        [("user", "what is 2+2?it"), ("assistant", " is 4.")],  # same text, another split between turns
    ]
    h = exact_hashes(*_flat(convs))
    assert h[0] == h[1] != h[2]
    words, msg = word_hashes(pa.array(["abc", "def", "", "ghi jkl", "x" * 100]))
    assert msg.tolist() == [0, 1, 3, 3, 4] and len(set(words.tolist())) == 5
