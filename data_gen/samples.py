"""SFT sample builders for expert training (DeepSeek-V3 post-training, step 1).

`expert_sample(row)` builds the `<problem, original response>` sample from any row that has an answer: the
problem as the user turn and a short worked response that ends in `\\boxed{answer}`. When the row carries a
solution (`solution` / `rationale` / `canonical_solution` column) that is the response; for arithmetic tasks
(reasoning-gym `basic_arithmetic`, `chain_sum`, ... whose metadata holds the expression) the response is the
step-by-step evaluation, one operation at a time, so the model learns to show work and then box the result.
A code task row (no answer, graded by its tests: `builtin:code_tasks`) whose `canonical_solution` is a complete
function defining its `entry_point` gets that function in a ```python block (`code_response`); HumanEval's
canonical solutions are bodies only, so HumanEval, an eval set, gives no samples.
The R1-style `<system prompt, problem, R1 response>` samples come from rejection sampling.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from fractions import Fraction
from typing import Any

_OPS = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub), ast.Mult: ("*", operator.mul)}
_DIV = (ast.Div, ast.FloorDiv)


def _fmt(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.10g}"


def _prec(node: ast.AST) -> int:
    if isinstance(node, ast.BinOp):
        return 1 if isinstance(node.op, (ast.Add, ast.Sub)) else 2
    return 3


def _render(node: ast.AST) -> str:
    """Infix text with only the parentheses that precedence needs."""
    if isinstance(node, ast.Constant):
        return _fmt(Fraction(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _render(node.operand)
        return f"-{inner}" if _prec(node.operand) == 3 else f"-({inner})"
    if isinstance(node, ast.BinOp):
        op = "/" if isinstance(node.op, _DIV) else _OPS[type(node.op)][0]
        left, right = _render(node.left), _render(node.right)
        if _prec(node.left) < _prec(node):
            left = f"({left})"
        # a - (b + c) and a / (b * c) need their parentheses; a + (b + c) does not, but keeping them is harmless
        if _prec(node.right) < _prec(node) or (_prec(node.right) == _prec(node) and op in "-/"):
            right = f"({right})"
        return f"{left} {op} {right}"
    raise ValueError("unsupported expression")


def _reduce_one(node: ast.AST) -> tuple[ast.AST, bool]:
    """Evaluate the leftmost innermost operation whose operands are both numbers; (new node, changed)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        return ast.Constant(-Fraction(node.operand.value)), True
    if isinstance(node, ast.UnaryOp):
        operand, changed = _reduce_one(node.operand)
        return ast.UnaryOp(node.op, operand), changed
    if not isinstance(node, ast.BinOp):
        return node, False
    if isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant):
        a, b = Fraction(node.left.value), Fraction(node.right.value)
        if isinstance(node.op, _DIV):
            if b == 0:
                raise ValueError("division by zero")
            return ast.Constant(a / b), True
        return ast.Constant(_OPS[type(node.op)][1](a, b)), True
    left, changed = _reduce_one(node.left)
    if changed:
        return ast.BinOp(left, node.op, node.right), True
    right, changed = _reduce_one(node.right)
    return ast.BinOp(node.left, node.op, right), changed


def arithmetic_steps(expression: str, max_steps: int = 12) -> list[str] | None:
    """['3 + 5 * 2', '3 + 10', '13'] for an expression of + - * /; None if it is not plain arithmetic."""
    try:
        node: ast.AST = ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval").body
        steps = [expression.strip()]
        for _ in range(max_steps * 4):
            node, changed = _reduce_one(node)
            if not changed:
                break
            text = _render(node)
            if text != steps[-1]:
                steps.append(text)
        return steps if isinstance(node, ast.Constant) and len(steps) <= max_steps + 1 else None
    except (SyntaxError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def worked_response(row: dict[str, Any]) -> str | None:
    """A short worked solution ending in \\boxed{answer}; for a code task without an answer, its reference function
    in a ```python block (`code_response`); None when the row has neither."""
    answer = row.get("answer")
    if answer is None or str(answer).strip() == "":
        return code_response(row)
    answer = str(answer).strip()
    boxed = f"\\boxed{{{answer}}}"
    for column in ("solution", "rationale", "canonical_solution"):
        text = row.get(column)
        if isinstance(text, str) and text.strip():
            text = text.strip()
            return text if boxed in text else f"{text}\n\nThe answer is {boxed}."
    metadata = row.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = None
    reasoning = aiw_reasoning(row, answer)
    if reasoning:
        return f"{reasoning}\n\nThe answer is {boxed}."
    expression = metadata.get("expression") if isinstance(metadata, dict) else None
    steps = arithmetic_steps(expression) if isinstance(expression, str) else None
    # Tasks may define their own division semantics; show the derivation only when it reaches the gold answer.
    if steps and len(steps) > 1 and steps[-1] == answer:
        work = "\n".join(f"= {s}" if i else s for i, s in enumerate(steps))
        return f"Let me evaluate it step by step.\n{work}\n\nThe answer is {boxed}."
    return f"The answer is {boxed}."


# ---- "Alice in Wonderland" puzzles (reasoning-gym `aiw`, the logic domain): the step small models miss

_AIW_SIBLINGS = re.compile(
    r"^(?P<name>\w+) has (?:(?P<b1>\d+) brothers and she also has (?P<s1>\d+) sisters|"
    r"(?P<s2>\d+) sisters and she also has (?P<b2>\d+) brothers)\. How many sisters does (?P<who>\w+)'s brother have\?"
)
_AIW_FRIENDS = re.compile(
    r"^(?P<name>\w+) has (?P<m>\d+) male friends and she also has (?P<f>\d+) female friends\..*"
    r"How many female friends does (?P<who>\w+), a male friend of (?P=name), have\?",
    re.DOTALL,
)


def aiw_reasoning(row: dict[str, Any], answer: str) -> str | None:
    """The reasoning of an `aiw` siblings or friends puzzle ("Alice has 3 sisters and 2 brothers. How many sisters
    does Alice's brother have?"): the brother's sisters are Alice's sisters and Alice herself. None for other rows,
    for the colleagues variant (whose gold in reasoning-gym leaves out the second circle) and when the count
    derived from the question is not the gold."""
    if row.get("task") != "aiw":
        return None
    prompt = row.get("prompt")
    question = prompt[-1]["content"] if isinstance(prompt, list) and prompt else str(prompt or "")
    if m := _AIW_SIBLINGS.match(question.strip()):
        name, sisters = m["name"], int(m["s1"] or m["s2"])
        text = (
            f"{name} is a girl with {sisters} sisters. Her brother has the same sisters as she does, and {name} "
            f"herself is his sister too: {sisters} + 1 = {sisters + 1}."
        )
        count = sisters + 1
    elif m := _AIW_FRIENDS.match(question.strip()):
        name, who, female = m["name"], m["who"], int(m["f"])
        text = (
            f"Everyone in the group is friends with everyone else. {who}'s female friends are {name}'s {female} "
            f"female friends and {name} herself: {female} + 1 = {female + 1}."
        )
        count = female + 1
    else:
        return None
    return text if str(count) == answer else None


# ---- code tasks (builtin:code_tasks): the reference solution as the response


def code_response(row: dict[str, Any]) -> str | None:
    """The row's `canonical_solution` in a ```python block when it is a complete function defining the row's
    `entry_point` (a code task's reference); None otherwise (no code task, or a body-only solution like HumanEval's)."""
    solution, entry_point = row.get("canonical_solution"), row.get("entry_point")
    if not isinstance(solution, str) or not isinstance(entry_point, str) or not entry_point:
        return None
    if not re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", solution, re.MULTILINE):
        return None
    return f"```python\n{solution.strip()}\n```"


def expert_sample(row: dict[str, Any]) -> dict[str, Any] | None:
    """`<problem, original response>`: {'messages': prompt turns + the worked response}, or None without one."""
    response = worked_response(row)
    if response is None:
        return None
    prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
    return {"messages": [*prompt, {"role": "assistant", "content": response}]}
