"""The `math` and `reasoning_gym` rewards on literal completions: equivalences, extraction order, bad gold."""

from __future__ import annotations

import json

import pytest

from rewards.math_reward import extract_answer, math_reward, reasoning_gym_reward

EQUIVALENT = [
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5"),
    ("So we get 0.5", "\\frac{1}{2}"),
    ("The answer is 50%.", "\\frac12"),
    ("\\boxed{\\dfrac{2}{4}}", "1/2"),
    ("\\boxed{0.50}", "\\frac{1}{2}"),
    ("\\boxed{\\{3,2,1\\}}", "\\{1,2,3\\}"),
    ("\\boxed{(0,1]}", "(0, 1]"),
    ("\\boxed{[1, 2)}", "[1,2)"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"),
    ("\\boxed{x^2+2x+1}", "(x+1)^2"),
    ("\\boxed{10^{-3}}", "0.001"),
    ("The answer is $\\frac{3}{4}$.", "0.75"),
    ("the answer is 3.5. Then we stop.", "7/2"),
    ("The total is 1,000 dollars", "1000"),
    ("12 + 7 = 19", "19"),
    ("The answer is 12 apples.", "12"),
    ("Final answer: -4", "-4"),
    ("x = 3", "3"),
    ("<think>maybe 3, maybe 4</think>The answer is 7.", "7"),
    ("She sells 16 - 3 - 4 = 9 eggs, so 9 * 2 = 18.", "Janet makes 9 * 2 = 18 dollars.\n#### 18"),
    ("\\boxed{\\pi/2}", "\\frac{\\pi}{2}"),
]
NOT_EQUIVALENT = [
    ("\\boxed{(0,1)}", "(0,1]"),
    ("The answer is 0.7", "0.75"),
    ("<think>it is 7</think>The answer is 3.", "7"),  # the reasoning's number does not count
    ("\\boxed{3} and then 7", "7"),  # the boxed answer wins over the last number
    ("\\boxed{\\{1,2\\}}", "\\{1,2,3\\}"),
    ("\\boxed{x^2+1}", "(x+1)^2"),
    ("", "12"),
    ("   ", "12"),
    ("I don't know", "12"),
    ("\\boxed{\\frac{1}{2", "0.5"),  # cut off inside the box: not a box, and not LaTeX that parses
    ("The answer is", "5"),
]
BAD_GOLD = ["Paris", "True", "", "   ", "five", None]


@pytest.mark.parametrize(("completion", "gold"), EQUIVALENT)
def test_equivalent_answers_score_one(completion, gold):
    assert math_reward([completion], [gold]) == [1.0]


@pytest.mark.parametrize(("completion", "gold"), NOT_EQUIVALENT)
def test_wrong_or_missing_answers_score_zero(completion, gold):
    assert math_reward([completion], [gold]) == [0.0]


@pytest.mark.parametrize("gold", BAD_GOLD)
def test_gold_that_is_not_math_scores_none_never_one(gold):
    assert math_reward(["42", "\\boxed{Paris}", "True"], [gold] * 3) == [None, None, None]


def test_last_number_fallback_is_configurable():
    assert math_reward(["12 + 7 = 19"], ["19"], last_number_fallback=False) == [0.0]
    assert math_reward(["so \\boxed{19}"], ["19"], last_number_fallback=False) == [1.0]


def test_extraction_order_marker_then_phrase_then_last_expression():
    assert extract_answer("The answer is 3. Check: \\boxed{4}, 5") == ("4", "boxed")
    assert extract_answer("We try 2. The final answer is 3. Then 9") == ("3", "final_answer")
    assert extract_answer("We try 2. The answer is 3. Then 9") == ("3", "phrase")
    assert extract_answer("2 and then 4") == ("4", "number")
    assert extract_answer("nothing", last_number_fallback=True) is None


def test_extract_answer_is_json_serialisable():
    found = extract_answer("Final Answer: The final answer is $(2, 5)$. I hope it is correct.")
    assert json.loads(json.dumps(found)) == ["(2, 5)", "final_answer"]


def test_chat_message_completions():
    completion = [{"role": "assistant", "content": "It is \\boxed{42}."}]
    assert math_reward([completion, [{"role": "assistant", "content": ""}]], ["42", "42"]) == [1.0, 0.0]


def test_reasoning_gym_scores_with_the_tasks_own_scorer():
    import reasoning_gym

    entry = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=3)[0]
    whole = json.dumps(entry, default=str)
    only_metadata = json.dumps(entry["metadata"], default=str)
    gold = entry["answer"]
    completions = [f"<answer>{gold}</answer>", f"<think>...</think>\\boxed{{{gold}}}", "<answer>nope</answer>", "x"]
    assert reasoning_gym_reward(completions, metadata=[whole] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert reasoning_gym_reward([f"{gold}"], metadata=[only_metadata], answer=[gold]) == [1.0]
    assert reasoning_gym_reward(["1", "1"], metadata=["not json", json.dumps({"source_dataset": "no_such"})]) == [
        None,
        None,
    ]
