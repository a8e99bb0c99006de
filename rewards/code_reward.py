"""The `code` reward: extract the program from a response and run it against the row's tests in the sandbox.

The program is the last fenced Python block of the answer (after `</think>`), preferring one that defines the
HumanEval `entry_point`; a response that is plain Python counts as a program too. When the program does not define
the entry point (a function body, as in HumanEval's canonical solutions), the function header from the `code_prefix`
column or from the code in the prompt is put in front of it.

Tests come from the `tests` (or HumanEval's `test`) column:
- a HumanEval test module with `def check(candidate)` plus an `entry_point` column: `check(entry_point)` is the
  test, or in fraction mode each assert of `check` is one;
- a list of assert statements (or a JSON string of one): each one is a test;
- any other Python string: one test, or in fraction mode each top-level assert.

The reward is 1.0/0.0 for all tests passing (`mode: all_pass`, the default, as pass@1 counts it) or the fraction
passed (`mode: fraction`). A response with no code scores 0.0; a row with no tests scores None. All programs of a
batch run in parallel in `rewards.sandbox`, one isolated worker per core; the tests run in a process apart from the
program's and see its functions as proxies returning plain data (see `rewards.sandbox` for what that guarantees).

Helpers the prompt itself defines in full and the tests call (HumanEval's `poly`, `encode_cyclic`, `encode_shift`)
run with the tests, from the prompt: a program that redefines them cannot change what the tests compute.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import warnings
from typing import Any, Literal

from rewards.base import completion_texts, final_answer_text, reward, row_value
from rewards.sandbox import Sandbox, SandboxJob, SandboxLimits, SandboxResult, limit_problems

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:from |import |def |async def |@|class )", re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_SANDBOXES: dict[int | None, Sandbox] = {}


def get_sandbox(num_workers: int | None = None) -> Sandbox:
    """The process-wide sandbox pool with this many workers (None: one per core), started on first use."""
    if num_workers not in _SANDBOXES:
        _SANDBOXES[num_workers] = Sandbox(num_workers)
    return _SANDBOXES[num_workers]


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE) is not None


def _compiles(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def extract_code(text: str, entry_point: str | None = None) -> str | None:
    """The program in a response: the last fenced Python block (one defining `entry_point` first), or the whole
    answer when it parses as Python; None when there is no code."""
    answer = final_answer_text(text)
    blocks = [body for tag, body in _FENCE.findall(answer) if tag.lower() in _PYTHON_TAGS]
    if entry_point:
        defining = [b for b in blocks if _defines(b, entry_point)]
        if defining:
            return defining[-1]
    if blocks:
        return blocks[-1]
    return answer if answer.strip() and _compiles(answer) else None


def _prompt_code(prompt: Any, entry_point: str) -> str | None:
    """The code in the prompt that defines `entry_point` (HumanEval's signature and docstring), if any."""
    if isinstance(prompt, list):
        users = [m.get("content") or "" for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else ""
    if not isinstance(prompt, str):
        return None
    blocks = [body for tag, body in _FENCE.findall(prompt) if tag.lower() in _PYTHON_TAGS]
    if not blocks:  # unfenced: the code starts at its first import, decorator or def
        start = _CODE_START.search(prompt)
        blocks = [prompt[start.start() :]] if start else []
    defining = [b for b in blocks if _defines(b, entry_point)]
    return defining[-1] if defining else None


def build_program(text: str, entry_point: str | None, prefix_source: Any) -> str | None:
    """The program to run for one response, or None when it has no code."""
    code = extract_code(text, entry_point)
    if entry_point and (code is None or not _defines(code, entry_point)):
        prefix = prefix_source if isinstance(prefix_source, str) and _defines(prefix_source, entry_point) else None
        prefix = prefix or _prompt_code(prefix_source, entry_point)
        if prefix:
            body = code if code is not None else final_answer_text(text)
            joined = prefix.rstrip("\n") + "\n" + body
            if _compiles(joined):
                return joined
    return code


def _split_asserts(statements: list[ast.stmt]) -> list[str]:
    """One test per top-level statement containing an assert; statements between them run with the next test."""
    tests, pending = [], []
    for stmt in statements:
        code = ast.unparse(stmt)
        is_def = isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        if not is_def and any(isinstance(node, ast.Assert) for node in ast.walk(stmt)):
            tests.append("\n".join([*pending, code]))
            pending = []
        else:
            pending.append(code)
    if pending and tests:
        tests[-1] += "\n" + "\n".join(pending)
    return tests


def _unusable(why: str) -> None:
    warnings.warn(f"code: a row cannot be scored, {why}; its score is None", stacklevel=4)
    return None


def build_tests(tests: Any, entry_point: str | None, fraction: bool) -> tuple[str, tuple[str, ...]] | None:
    """(setup, tests) for the sandbox from a row's tests column; None (with a warning when the tests are there but
    unusable) when the row cannot be scored: broken gold never scores 1.0, nor 0.0."""
    if isinstance(tests, str) and tests.lstrip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):  # a JSONL file may hold the assert list as a string
            tests = json.loads(tests)
    if isinstance(tests, (list, tuple)):
        items = tuple(str(t) for t in tests if t is not None and str(t).strip())
        if not all(map(_compiles, items)):
            return _unusable("one of its tests is not valid Python")
        return ("", items) if items else None
    if not isinstance(tests, str) or not tests.strip():
        return None
    try:
        module = ast.parse(tests)
    except SyntaxError as e:
        return _unusable(f"its tests are not valid Python ({e.msg}, line {e.lineno})")
    check = next((s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check"), None)
    if check is not None and not entry_point:  # check() defined but never called would pass every program
        return _unusable("its tests define check(candidate) but it has no entry_point")
    if check is not None:
        split = _split_asserts(check.body) if fraction else []
        if split:
            return f"{tests}\ncandidate = {entry_point}\n", tuple(split)
        return tests, (f"check({entry_point})",)
    split = _split_asserts(module.body) if fraction else []
    return ("", tuple(split)) if split else ("", (tests,))


def _validate(params: dict[str, Any]) -> list[str]:
    problems = limit_problems(params["timeout_s"], params["memory_mb"], params["max_processes"])
    workers = params["num_workers"]
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024):
        problems.append(f"num_workers: must be an integer from 1 to 1024 (or null for one per core), got {workers!r}")
    return problems


def _is_stub(node: ast.stmt) -> bool:
    """A def whose body is only a docstring, `pass` or `...`: a signature for the program to fill in."""
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return all(isinstance(s, ast.Pass) for s in body)


def prompt_helpers(prefix_source: Any, entry_point: str | None, tests: Any) -> str:
    """The imports and the complete functions and classes of the prompt's code that the tests use, other than the
    entry point, as source to run with the tests ('' when there are none)."""
    if not entry_point or not isinstance(tests, str):
        return ""
    code = prefix_source if isinstance(prefix_source, str) and _defines(prefix_source, entry_point) else None
    code = code or _prompt_code(prefix_source, entry_point)
    try:
        prompt, test_module = ast.parse(code or ""), ast.parse(tests)
    except (SyntaxError, ValueError):
        return ""
    used = {n.id for n in ast.walk(test_module) if isinstance(n, ast.Name)}
    helpers = [
        node
        for node in prompt.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.name != entry_point
        and node.name in used
        and not _is_stub(node)
    ]
    if not helpers:
        return ""
    imports = [node for node in prompt.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(ast.unparse(node) for node in [*imports, *helpers]) + "\n"


def run_code_tests(
    completions: list,
    tests: list,
    entry_point: list | None = None,
    prefix_sources: list | None = None,
    *,
    fraction: bool = False,
    limits: SandboxLimits | None = None,
    num_workers: int | None = None,
) -> list[SandboxResult | None]:
    """Run each completion's program against its row's tests; None for rows without usable tests, a result with
    nothing passed (exit 'no code') for responses without code."""
    results: list[SandboxResult | None] = [None] * len(completions)
    jobs, where = [], []
    for i, text in enumerate(completion_texts(completions)):
        ep = entry_point[i] if entry_point else None
        built = build_tests(tests[i], ep, fraction)
        if built is None:
            continue
        prefix_source = prefix_sources[i] if prefix_sources else None
        program = build_program(text, ep, prefix_source)
        if program is None:
            results[i] = SandboxResult(0, len(built[1]), "no code", "", 0.0)
            continue
        setup = prompt_helpers(prefix_source, ep, tests[i]) + built[0]
        jobs.append(SandboxJob(program, built[1], setup, functions=(ep,) if ep else ()))
        where.append(i)
    for i, result in zip(where, get_sandbox(num_workers).run(jobs, limits or SandboxLimits()) if jobs else []):
        results[i] = result
    return results


@reward("code", kind="rule", columns=("tests|test",), validate=_validate)
def code_reward(
    completions: list,
    tests: list | None = None,
    test: list | None = None,
    entry_point: list | None = None,
    prompts: list | None = None,
    code_prefix: list | None = None,
    *,
    mode: Literal["all_pass", "fraction"] = "all_pass",
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    max_processes: int = 64,
    num_workers: int | None = None,
    **kwargs,
) -> list[float | None]:
    """Runs the response's Python against the row's tests in the sandbox: 1.0/0.0 for all passing, or the fraction.

    Args:
        completions: responses, strings or chat message lists.
        tests / test: per row, a HumanEval test module (with `entry_point`), a list of asserts, or a script.
        entry_point: per row, the HumanEval function name that `check` is called with.
        prompts / code_prefix: where to find the function header when a response gives only its body.
        mode: 'all_pass' (1.0 only when every test passes) or 'fraction' (share of tests passed).
        timeout_s: wall-clock limit per program, all its tests included; the CPU limit is one second more.
        memory_mb: address-space limit per process, 64 to 1048576; all processes of a program together may hold
            twice that, shared memory and files in its tmpfs included.
        max_processes: process limit for the program, 1 to 32768.
        num_workers: parallel sandbox workers; null means one per core.
    """
    n = len(completions)
    column = tests if tests is not None else test
    if column is None:
        return [None] * n
    prompt_column = kwargs.get("prompt") if prompts is None else prompts
    prefixes = [row_value(code_prefix, i, n) or row_value(prompt_column, i, n) for i in range(n)]
    limits = SandboxLimits(timeout_s, memory_mb, max_processes=max_processes, max_total_memory_mb=2 * memory_mb)
    results = run_code_tests(
        completions, column, entry_point, prefixes, fraction=mode == "fraction", limits=limits, num_workers=num_workers
    )
    if mode == "fraction":
        return [None if r is None else r.fraction for r in results]
    return [None if r is None else float(r.all_passed) for r in results]
