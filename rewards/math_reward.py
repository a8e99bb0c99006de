"""Verifiable-answer rewards: `math` (equivalence checked with math-verify) and `reasoning_gym` (the task's scorer).

`math` finds the final answer of a response (after its `</think>` if it has one) in this order: the last `\\boxed{}`,
the last "the answer is ..." / "final answer: ...", and, as a configurable fallback, the last number. It parses the
answer and the gold with math-verify and checks equivalence, so `0.5`, `1/2`, `\\frac{2}{4}` and `50%` all match
`\\frac{1}{2}`, `\\{3,2,1\\}` matches `\\{1,2,3\\}` and `(0,1]` does not match `(0,1)`. A gold that does not parse as
mathematics (prose such as "Paris" or "True", or nothing) scores `None`, never 1.0: the row is not a math problem.
"""

from __future__ import annotations

import json
import re
import threading
from functools import lru_cache
from typing import Any

from rewards.base import completion_texts, final_answer_text, reward

# Words that may appear in a mathematical answer; any other word of two letters or more makes a span prose.
_MATH_WORDS = {
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "log", "ln",
    "exp", "sqrt", "pi", "inf", "infty", "infinity", "frac", "dfrac", "tfrac", "text", "textbf", "mathrm", "mathbf",
    "cdot", "times", "div", "le", "ge", "leq", "geq", "ne", "neq", "in", "cup", "cap", "emptyset", "varnothing",
    "pm", "mp", "circ", "deg", "mod", "pmod", "left", "right", "lt", "gt", "boxed", "and", "or", "degrees",
}  # fmt: skip
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_ANSWER_PHRASE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(?::\s*)?(.+?)(?=\.(?!\d)|\n|$)", re.IGNORECASE
)
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?\s*%?")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None when there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1 : i].strip()
    return None  # unbalanced: the response was cut off inside the box


def extract_answer(text: str, last_number_fallback: bool = True) -> tuple[str, str] | None:
    """Find the final answer of a response; return (answer, how) with how in 'boxed', 'phrase', 'last_number'."""
    text = final_answer_text(text)
    boxed = last_boxed(text)
    if boxed:
        return boxed, "boxed"
    phrases = [m.group(1).strip(" *$") for m in _ANSWER_PHRASE.finditer(text)]
    phrases = [p for p in phrases if p]
    if phrases:
        return phrases[-1], "phrase"
    if last_number_fallback:
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1].replace(" ", ""), "last_number"
    return None


def _is_prose(span: str) -> bool:
    span = re.sub(r"\\text\{[^}]*\}", "", span)  # units and labels inside \text{} are fine
    return any(w.lower() not in _MATH_WORDS for w in _WORD.findall(span))


def _timeout() -> int | None:
    # math-verify times out with SIGALRM, which only works in the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


def parse_math(span: str, latex: bool = False) -> list:
    """Parse an answer span with math-verify. Prose is searched for an expression; math-only text is read as LaTeX."""
    from math_verify import parse

    span = span.strip()
    if not span:
        return []
    if latex or not _is_prose(span):
        parsed = parse(f"${span}$", parsing_timeout=_timeout())
        if parsed:
            return parsed
    return parse(span, parsing_timeout=_timeout())


@lru_cache(maxsize=4096)
def parse_gold(gold: str) -> tuple | None:
    """Parse a gold answer; None when it is not mathematics (so the row is not applicable)."""
    gold = gold.strip()
    if "####" in gold:  # GSM8K solutions end with '#### 42'
        gold = gold.rsplit("####", 1)[1].strip()
    boxed = last_boxed(gold)
    parsed = parse_math(boxed if boxed is not None else gold, latex=boxed is not None)
    if not parsed or isinstance(parsed[0], str):
        return None
    return tuple(parsed)


def math_correct(text: str, gold: Any, last_number_fallback: bool = True) -> float | None:
    """1.0 when the response's final answer equals the gold, 0.0 when not or when it has none, None for bad gold."""
    from math_verify import verify

    if gold is None or isinstance(gold, bool):
        return None
    parsed_gold = parse_gold(str(gold))
    if parsed_gold is None:
        return None
    found = extract_answer(text, last_number_fallback)
    if found is None:
        return 0.0
    answer, how = found
    parsed = parse_math(answer, latex=how == "boxed")
    if not parsed:
        return 0.0
    return 1.0 if verify(list(parsed_gold), parsed, timeout_seconds=_timeout()) else 0.0


@reward("math", kind="rule")
def math_reward(completions: list, answer: list, *, last_number_fallback: bool = True, **kwargs) -> list[float | None]:
    """Final answer equivalent to the `answer` column (math-verify): 1.0 or 0.0; None when the gold is not math.

    Args:
        completions: responses, strings or chat message lists.
        answer: the gold answers, one per completion ("42", "\\frac{1}{2}", "(0, 1]", "#### 7", ...).
        last_number_fallback: take the response's last number when it has no `\\boxed{}` and no "the answer is".
    """
    return [math_correct(t, g, last_number_fallback) for t, g in zip(completion_texts(completions), answer)]


def _reasoning_gym_entry(raw: Any, gold: Any) -> dict | None:
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("metadata"), dict) and "source_dataset" in data["metadata"]:
        return data  # the whole entry: {question, answer, metadata}
    if "source_dataset" in data:  # only the entry's metadata
        return {"answer": gold, "metadata": data}
    return None


def _reasoning_gym_answer(text: str) -> str:
    text = final_answer_text(text)
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    found = extract_answer(text, last_number_fallback=False)
    if found:
        return found[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@reward("reasoning_gym", kind="rule")
def reasoning_gym_reward(
    completions: list, metadata: list, answer: list | None = None, **kwargs
) -> list[float | None]:
    """The reasoning-gym task's own score of the answer (in `<answer>` tags, boxed, or the last line), in [0, 1].

    Args:
        completions: responses, strings or chat message lists.
        metadata: per row, the reasoning-gym entry as JSON (`{question, answer, metadata: {source_dataset, ...}}`),
            or only its `metadata`, with the gold then read from `answer`. Rows whose entry is missing or names an
            unknown task score None.
    """
    from reasoning_gym import get_score_answer_fn

    out: list[float | None] = []
    for i, text in enumerate(completion_texts(completions)):
        entry = _reasoning_gym_entry(metadata[i], answer[i] if answer else None)
        try:
            score_fn = get_score_answer_fn(entry["metadata"]["source_dataset"]) if entry else None
        except (KeyError, ValueError):
            score_fn = None
        out.append(None if score_fn is None else float(score_fn(_reasoning_gym_answer(text), entry)))
    return out
