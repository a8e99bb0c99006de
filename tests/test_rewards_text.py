"""The format, length, repetition and language rewards on literal completions, malformed and empty ones included."""

from __future__ import annotations

import pytest

from rewards.language import foreign_share, language_reward
from rewards.length import length_reward, shorter_correct_bonus, soft_overlong_penalty
from rewards.repetition import repetition_ratio, repetition_reward
from rewards.think_format import think_format_reward, think_layout_ok

LAYOUT = [
    ("<think>2+2 is 4</think>The answer is 4.", 1.0),
    ("\n  <think>\nreason\n</think>\n\nanswer", 1.0),
    ("<think>reason</think>", 0.0),  # no answer
    ("<think>   </think>answer", 1.0),  # blank reasoning is well-formed (TRL, open-r1); require_reasoning rejects it
    ("<think></think>\nThis is my answer.", 1.0),
    ("The answer is 4.", 0.0),  # no reasoning block
    ("Sure! <think>reason</think>answer", 0.0),  # text before the block
    ("<think>a</think>b<think>c</think>d", 0.0),  # two blocks
    ("<think>reason without end. answer", 0.0),  # never closed (cut off)
    ("</think>answer<think>", 0.0),
    ("<think><think>x</think>y", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), LAYOUT)
def test_think_format(completion, expected):
    assert think_format_reward([completion]) == [expected]


def test_think_format_require_reasoning_and_the_filter_default():
    blank = ["<think>   </think>answer", "<think></think>answer", "<think>r</think>answer"]
    assert think_format_reward(blank, require_reasoning=True) == [0.0, 0.0, 1.0]
    # the rejection-sampling filter `format: think` keeps only samples that do reason
    assert [think_layout_ok(t) for t in blank] == [False, False, True]
    assert think_layout_ok("<think></think>answer", require_reasoning=False)


def test_repetition_conventions():
    # open-r1 / TRL: 'this this this this this', bigrams -> 4 bigrams, 1 distinct
    assert repetition_reward(["this this this this this"], ngram=2) == [-0.75]
    assert repetition_reward(["The the The the"], ngram=2) == [pytest.approx(-1 / 3)]  # case kept: 2 distinct of 3
    # characters, not jieba words: 9 character bigrams of which 2 distinct
    assert repetition_reward(["这个这个这个这个这个"], ngram=2, unit="chars") == [pytest.approx(-(1 - 2 / 9))]


def test_shorter_correct_gives_none_for_a_gold_that_is_not_math():
    completions = ["\\boxed{answer}", "\\boxed{answer} xxxxxxxxxx"]
    out = length_reward(
        completions, answer=["unparseable"] * 2, prompts=["p"] * 2, mode="shorter_correct", unit="chars"
    )
    assert out == [None, None]


def test_think_format_tags_prompt_opened_and_answer_tags():
    assert think_format_reward(["<reasoning>r</reasoning>a"], open_tag="<reasoning>", close_tag="</reasoning>") == [1]
    assert think_format_reward(["r</think>a", "<think>r</think>a"], think_in_prompt=True) == [1.0, 0.0]
    tags = ["<answer>", "</answer>"]
    completions = ["<think>r</think>\n<answer>4</answer>\n", "<think>r</think>4", "<think>r</think><answer> </answer>"]
    assert think_format_reward(completions, answer_tags=tags) == [1.0, 0.0, 0.0]
    chat = [{"role": "assistant", "content": "<think>r</think>a"}]
    assert think_format_reward([chat]) == [1.0]


def test_soft_overlong_penalty_matches_dapo():
    # L_max = 100, L_cache = 20: free up to 80, linear to -1 at 100, -1 beyond
    assert [soft_overlong_penalty(n, 100, 20) for n in (0, 80, 90, 100, 101, 10_000)] == [0.0, 0.0, -0.5, -1.0, -1, -1]


def test_length_reward_units():
    text = "one two three four five"
    assert length_reward([text], max_length=6, cache_length=2, unit="words") == [-0.5]
    assert length_reward([text], max_length=30, cache_length=10, unit="chars") == [pytest.approx(-0.3)]  # 23 chars
    assert length_reward([text, ""], completion_ids=[[1] * 9, []], max_length=10, cache_length=4) == [-0.75, 0.0]
    with pytest.warns(UserWarning, match="counting whitespace-separated words"):
        assert length_reward([text], max_length=6, cache_length=2) == [-0.5]


def test_length_reward_think_part_measures_only_reasoning():
    completions = ["<think>a b c d e f</think>ok", "<think>a</think>" + " long" * 50]
    assert length_reward(completions, max_length=6, cache_length=2, unit="words", part="think") == [-1.0, 0.0]


def test_shorter_correct_bonus_matches_kimi():
    # lengths 10 (correct), 20 (correct), 30 (wrong): lambda 0.5, 0, -0.5; wrong gets min(0, lambda)
    assert shorter_correct_bonus([10, 20, 30], [1.0, 1.0, 0.0]) == [0.5, 0.0, -0.5]
    assert shorter_correct_bonus([10, 30], [0.0, None]) == [0.0, None]
    assert shorter_correct_bonus([5, 5], [1.0, 0.0]) == [0.0, 0.0]


def test_length_reward_shorter_correct_groups_by_prompt():
    completions = ["\\boxed{4}", "well, so, then, hence \\boxed{4}", "\\boxed{5}", "\\boxed{9}"]
    prompts = ["2+2?", "2+2?", "2+3?", "2+3?"]
    out = length_reward(
        completions, answer=["4", "4", "5", "5"], prompts=prompts, mode="shorter_correct", unit="chars"
    )
    # first group: both correct, the shorter gets +0.5 and the longer -0.5; second: equal lengths, lambda = 0
    assert out == [0.5, -0.5, 0.0, 0.0]


def test_repetition_ratio_and_reward():
    assert repetition_ratio("the cat sat on the mat") == 0.0
    looping = "I think so. " * 20
    assert repetition_ratio(looping) > 0.85
    assert repetition_ratio("") == 0.0
    assert repetition_ratio("too short") == 0.0
    assert repetition_ratio("哈哈哈哈哈哈", ngram=2, unit="chars") == pytest.approx(0.8)
    scores = repetition_reward(["a fresh sentence with no loops", looping, ""], max_penalty=0.5)
    assert scores[0] == 0.0 and scores[2] == 0.0
    assert -0.5 <= scores[1] < -0.4


def test_language_penalty_is_the_foreign_letter_share():
    assert language_reward(["Hello world", "", "12 + 7 = 19", "Ｈｅｌｌｏ"]) == [0.0, 0.0, 0.0, 0.0]
    assert language_reward(["你好 ab"], language="en") == [pytest.approx(-0.5)]
    assert language_reward(["这是中文回答"], language="zh") == [0.0]
    assert language_reward(["这是中文回答"], language="en", max_penalty=2.0) == [-2.0]
    assert language_reward(["これは日本語です。漢字も"], language="ja") == [0.0]
    assert language_reward(["Привет hi"], language="cyrillic") == [pytest.approx(-2 / 8)]


def test_language_ignores_code_and_math_by_default():
    text = "答案是 $x^2 + y$ 。代码：```python\nprint('hi')\n``` 和 `foo`"
    assert foreign_share(text, ("CJK",)) == 0.0
    assert foreign_share(text, ("CJK",), ignore_code_and_math=False) > 0.5
