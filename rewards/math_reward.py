"""Verifiable-answer rewards: `math` (equivalence checked with math-verify) and `reasoning_gym` (the task's scorer).

`math` finds the final answer of a response by the answer policy of `rewards.answer_extraction` (the last
`\\boxed{}`, `<answer>` tag or "final answer is" phrase; else an "answer is" phrase; else the last LaTeX span or
expression), parses it and the gold as LaTeX with math-verify and checks equivalence, so `0.5`, `1/2`,
`\\frac{2}{4}` and `50%` all match `\\frac{1}{2}`, `\\{3,2,1\\}` matches `\\{1,2,3\\}`, `(0,1]` does not match `(0,1)`
and `\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}` is a matrix, not its last entry. Scores: 1.0 equivalent, 0.0 not
equivalent or no recognisable answer, None when the gold does not parse as mathematics (prose such as "Paris" or
"True", or nothing): the row is not a math problem, and it never scores 1.0.

Before parsing, the answer and the gold are cleaned of what math-verify misreads: JSON-doubled backslashes
(`\\\\frac`), `\\mathrm{e}` for Euler's number, a `cases` system (read as the list of its equations), digit groups
separated by spaces (`1 000`, `1\\,000`: TeX ignores the space), Unicode signs (`−`, `×`, `≤`, `π`, `√`), a mixed
number (`1 1/2` is 3/2) and degrees inside a trigonometric function (`\\sin(90^\\circ - x)` is `\\cos x`). A `\\pm`
that stops the parse is read as its two answers, and a chain such as `17 \\bmod 5 = 2` that does not parse states
its value last. Units are dropped, as math-verify drops them (`10 cm`, `10cm` and `10\\text{ cm}` are 10); a comma
list is a set (`4, 10, -2` is `-2, 4, 10`), a parenthesised one a tuple or an interval; an unreduced fraction is the
number it denotes (`\\frac{2}{4}` is 1/2).

Beyond math-verify's own equivalence, these readings also count, each a documented convention:

- decimals are compared to six decimal places, math-verify's rounding (`42.0000001` is 42);
- a decimal answer with at least three significant digits or two decimal places matches a gold that has no exact
  decimal form (`\\sqrt{3}`, `\\frac{1}{3}`, `40\\pi`) when it is the gold rounded or truncated to the places written
  (`1.732`, `0.33`, `125.663`); a gold with an exact decimal form (`0.75`, `2`) must be matched to six places;
- a decimal is the exact number it denotes (`^{0.5}` is `^{1/2}`); when both sides raise something to a fractional
  power (and neither has an absolute value) their variables are positive reals, so such powers simplify;
- a constant power that equals an integer to 15 significant digits, math-verify's numeric precision, is that
  integer (`2^{1/2^{1000}}` is 1);
- a vector gold (one row or one column) matches the same entries written as a tuple, `(1, -2)` or `[0.5, 1]`;
- `i` is the imaginary unit (`i(2-i)` is `1+2i`);
- a function written `y = 2x + 3` is the function `f(x) = 2x + 3`;
- a time of day with seconds or AM/PM matches the same time written otherwise (`20:34:00`, `08:34 PM`, `20:34`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from rewards.answer_extraction import ANSWER_TAG, extract_answer, extract_gold, last_boxed, undouble_backslashes
from rewards.base import completion_texts, final_answer_text, reward

__all__ = ["extract_answer", "last_boxed", "math_correct", "math_reward", "parse_answer", "parse_gold"]

_UNICODE = {"−": "-", "×": "\\times ", "÷": "\\div ", "·": "\\cdot ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ",
            "±": "\\pm ", "π": "\\pi ", "∞": "\\infty ", "√": "\\sqrt "}  # fmt: skip
_CASES = re.compile(r"\\begin\{cases\}(.*?)\\end\{cases\}", re.DOTALL)
_DIGIT_GROUPS = re.compile(r"(?<![\d.,])\d{1,3}(?:(?:\s|\\,|\\;|\\!|~)+\d{3})+(?![\d.,])")
_EULER = re.compile(r"\\(?:mathrm|operatorname|mathit)\s*\{\s*e\s*\}")
_MIXED = re.compile(r"(?P<sign>-?)(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)")  # 1 1/2, a mixed number
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)\b")
_DEGREES = re.compile(r"(?P<deg>\d+(?:\.\d+)?)\s*(?:\^\s*\{?\s*\\circ\s*\}?|°)")
_CLOCK = re.compile(
    r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\s*(?:\\text\s*\{\s*)?(?:(?P<half>[AaPp])\.?\s*[Mm]\.?)?\s*\}?"
)


def _timeout() -> int | None:
    # math-verify times out with SIGALRM, which only works in the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


def _cases_as_list(latex: str) -> str:
    """A system `\\begin{cases} a+b=1 \\\\ a-b=2 \\end{cases}` is the list of its equations; a piecewise one (with `&`)
    stays."""

    def rows(m: re.Match) -> str:
        body = m.group(1)
        if "&" in body:
            return m.group(0)
        return ", ".join(r.strip() for r in re.split(r"\\\\", body) if r.strip())

    return _CASES.sub(rows, latex)


def clean_latex(latex: str) -> str:
    """The fixes math-verify needs before it parses an answer (see the module docstring)."""
    latex = undouble_backslashes(latex.strip())
    for char, command in _UNICODE.items():
        latex = latex.replace(char, command)
    latex = _EULER.sub("e", latex)
    latex = _cases_as_list(latex)
    latex = _DIGIT_GROUPS.sub(lambda m: re.sub(r"\D", "", m.group()), latex)
    mixed = _MIXED.fullmatch(latex.strip())
    if mixed and int(mixed["num"]) < int(mixed["den"]):
        whole, num, den = int(mixed["whole"]), int(mixed["num"]), int(mixed["den"])
        latex = f"{mixed['sign']}\\frac{{{whole * den + num}}}{{{den}}}"
    if _TRIG.search(latex):
        latex = _DEGREES.sub(lambda m: f"(\\frac{{{m['deg']}\\pi}}{{180}})", latex)
    return re.sub(r"(?<!\.)\.$", "", latex.strip()).strip()


def _split_top_level(latex: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(latex):
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            parts.append(latex[start:i])
            start = i + 1
    return [*parts, latex[start:]]


def _expand_pm(latex: str) -> str:
    """`x = 1 \\pm \\sqrt{2}` -> `x = 1 + \\sqrt{2}, x = 1 - \\sqrt{2}`: the two answers a `\\pm` stands for."""
    items = []
    for part in _split_top_level(latex):
        if part.count("\\pm") == 1:
            items += [part.replace("\\pm", "+"), part.replace("\\pm", "-")]
        else:
            items.append(part)
    return ", ".join(i.strip() for i in items)


def _parse_latex(latex: str) -> list:
    """math-verify's parse of a LaTeX answer (its value, then its normalised text); [] when it has no value."""
    from math_verify import LatexExtractionConfig, parse

    parsed = parse(f"$${latex}$$", extraction_config=[LatexExtractionConfig()], parsing_timeout=_timeout())
    return parsed if any(not isinstance(p, str) for p in parsed) else []


@lru_cache(maxsize=8192)
def parse_answer(latex: str) -> tuple | None:
    """Parse an answer span as LaTeX with math-verify (never mined for numbers); None when it does not parse."""
    latex = clean_latex(latex)
    if not latex:
        return None
    parsed = _parse_latex(latex)
    if not parsed and "\\pm" in latex:
        parsed = _parse_latex(_expand_pm(latex))
    sides = re.split(r"(?<![<>!\\])=", latex)
    if not parsed and len(sides) > 1 and "," not in latex:
        parsed = _parse_latex(sides[-1])  # `17 \bmod 5 = 2`: a chain states its value last
    return tuple(parsed) or None


@lru_cache(maxsize=4096)
def parse_gold(gold: str) -> tuple | None:
    """Parse a gold answer; None when it is not mathematics (so the row is not applicable)."""
    found = extract_gold(gold.strip())
    return parse_answer(found[0]) if found else None


def _rebuild(expr, args: list):
    """`expr` with new args, left unevaluated where sympy allows (so `Eq(2, 2)` stays an equation)."""
    if args == list(expr.args):
        return expr
    try:
        return expr.func(*args, evaluate=False)
    except TypeError:
        try:
            return expr.func(*args)
        except Exception:  # a sympy type that cannot be rebuilt from its args: leave it as it was
            return expr


def _settle_integers(expr):
    """`expr` with each constant power that equals an integer to 15 significant digits replaced by that integer
    (`2^{1/2^{1000}}` -> 1): math-verify's own numeric precision, which it cannot reach through such a power."""
    from sympy import Basic, Integer, Pow

    if not isinstance(expr, Basic):
        return expr
    if isinstance(expr, Pow) and expr.is_number and not expr.exp.is_Integer:
        value = expr.evalf(20)
        if value.is_real and value.is_finite:
            nearest = int(round(value))
            if nearest != 0 and abs(value - nearest) <= 1e-15 * abs(nearest):
                return Integer(nearest)
    return _rebuild(expr, [_settle_integers(a) for a in expr.args]) if expr.args else expr


def _terminates(value) -> bool:
    """Whether a rational number has an exact decimal form (its denominator has no prime factor but 2 and 5)."""
    q = int(value.q)
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def _written_decimals(expr) -> list[tuple[Decimal, int]]:
    """The decimals of an answer precise enough to stand for an exact number: (value, places written)."""
    from sympy import Float

    out = []
    for f in expr.atoms(Float):
        written = repr(float(f))
        if "e" in written or "n" in written:
            continue  # 1e-07, inf, nan: not a decimal as written
        whole, _, places = written.lstrip("-").partition(".")
        significant = len((whole + places).lstrip("0"))
        if places and places != "0" and (significant >= 3 or len(places) >= 2):
            out.append((Decimal(written), len(places)))
    return out


def _snap_to_decimals(expr, decimals: list[tuple[Decimal, int]]):
    """`expr` with each constant that has no exact decimal form replaced by a written decimal that rounds or
    truncates it (sqrt(3) -> 1.732 when the answer wrote 1.732); the other parts unchanged."""
    from sympy import Basic, Float, MatrixBase

    if isinstance(expr, MatrixBase):
        return expr.applyfunc(lambda e: _snap_to_decimals(e, decimals))
    if not isinstance(expr, Basic):
        return expr
    exact_decimal = expr.is_Rational and _terminates(expr)
    if getattr(expr, "is_number", False) and not isinstance(expr, Float) and not exact_decimal:
        value = expr.evalf(30)
        if value.is_real and value.is_finite:
            exact = Decimal(str(value))
            for written, places in decimals:
                step = Decimal(1).scaleb(-places)
                if written in (exact.quantize(step, ROUND_HALF_UP), exact.quantize(step, ROUND_DOWN)):
                    return Float(str(written))
    if not expr.args:
        return expr
    return _rebuild(expr, [_snap_to_decimals(a, decimals) for a in expr.args])


def _exact_decimals(expr):
    """`expr` with every decimal replaced by the rational it denotes (0.5 -> 1/2)."""
    from sympy import Float, Rational

    floats = expr.atoms(Float)
    return expr.xreplace({f: Rational(repr(float(f))) for f in floats if "n" not in repr(float(f))})


def _as_vector(expr, like):
    """A tuple or two-ended interval read as a vector shaped like the matrix `like`; None when it is neither."""
    from sympy import Interval, Matrix, MatrixBase, Tuple

    if not isinstance(like, MatrixBase) or 1 not in like.shape or isinstance(expr, MatrixBase):
        return None
    if isinstance(expr, Interval) and max(like.shape) == 2:
        items = [expr.start, expr.end]
    elif isinstance(expr, Tuple) and len(expr) == max(like.shape):
        items = list(expr)
    else:
        return None
    return Matrix(items).reshape(*like.shape)


def _function_value(expr):
    """The right side of `y = ...` or `f(x) = ...`, the value of a function; None for anything else."""
    from sympy import Eq, Symbol
    from sympy.core.function import AppliedUndef

    if isinstance(expr, Eq) and isinstance(expr.lhs, (Symbol, AppliedUndef)):
        return expr.rhs
    return None


def _imaginary(expr):
    """`expr` with the variable `i` read as the imaginary unit."""
    from sympy import I

    return expr.xreplace({s: I for s in expr.free_symbols if getattr(s, "name", "") == "i"})


def _same_to_places(gold, pred, places: int = 6) -> bool:
    """Two numbers, one of them written as a decimal, equal to `places` decimal places (math-verify's rounding,
    which sympy's Float(42.0) != Integer(42) defeats)."""
    from sympy import Float

    if not (getattr(gold, "is_number", False) and getattr(pred, "is_number", False)):
        return False
    if not (gold.atoms(Float) or pred.atoms(Float)):
        return False
    a, b = gold.evalf(30), pred.evalf(30)
    if not (a.is_real and b.is_real and a.is_finite and b.is_finite):
        return False
    step = Decimal(1).scaleb(-places)
    return Decimal(str(a)).quantize(step, ROUND_HALF_UP) == Decimal(str(b)).quantize(step, ROUND_HALF_UP)


def _positive(gold, pred):
    """Both with their variables taken as positive reals, when both raise something to a fractional power (and
    neither has an absolute value): `(r_0/(r+r_0))^{1/2}` then simplifies like `\\sqrt{r_0}/\\sqrt{r+r_0}`."""
    from sympy import Abs, Pow, Symbol

    def fractional(expr) -> bool:
        return any(p.exp.is_Rational and not p.exp.is_Integer for p in expr.atoms(Pow))

    if not (fractional(gold) and fractional(pred)) or gold.atoms(Abs) or pred.atoms(Abs):
        return None
    names = {s.name for s in gold.free_symbols | pred.free_symbols if isinstance(s, Symbol)}
    if not names:
        return None
    positive = {n: Symbol(n, positive=True) for n in names}

    def subs(expr):
        return expr.xreplace({s: positive[s.name] for s in expr.free_symbols if isinstance(s, Symbol)})

    return subs(gold), subs(pred)


def _verify(gold, pred) -> bool:
    from math_verify import verify

    return verify(gold, pred, timeout_seconds=_timeout())


def _clock(text: str) -> tuple[int, int, int, bool] | None:
    """(hours 0-23, minutes, seconds, explicit) of a time of day such as `20:34`, `20:34:00` or `08:34 PM`;
    `explicit` when it has seconds or AM/PM, so it cannot be a ratio."""
    m = _CLOCK.fullmatch(text.strip())
    if m is None or int(m["m"]) > 59:
        return None
    hours = int(m["h"]) % 12 + (12 if (m["half"] or "").lower() == "p" else 0) if m["half"] else int(m["h"])
    return hours, int(m["m"]), int(m["s"] or 0), bool(m["s"] or m["half"])


def _readings(gold, pred):
    """Further (gold, pred) pairs that state the same answer by the conventions of the module docstring."""
    from sympy import Basic, Eq, MatrixBase
    from sympy.core.function import AppliedUndef

    if not isinstance(gold, (Basic, MatrixBase)) or not isinstance(pred, (Basic, MatrixBase)):
        return
    for a, b in ((gold, pred), (pred, gold)):
        vector = _as_vector(b, a)
        if vector is not None:
            yield (a, vector) if a is gold else (vector, a)
    yield _exact_decimals(gold), _exact_decimals(pred)
    decimals = _written_decimals(pred)
    if decimals:
        yield _snap_to_decimals(gold, decimals), pred
    if any(getattr(s, "name", "") == "i" for s in gold.free_symbols | pred.free_symbols):
        yield _imaginary(gold), _imaginary(pred)
    if isinstance(gold, Basic) and isinstance(pred, Basic):
        positive = _positive(_exact_decimals(gold), _exact_decimals(pred))
        if positive:
            yield positive
    if isinstance(gold, Eq) and isinstance(pred, Eq):
        labels = (gold.lhs, pred.lhs)
        if sum(isinstance(s, AppliedUndef) for s in labels) == 1 and None not in map(_function_value, (gold, pred)):
            yield gold.rhs, pred.rhs


def equivalent(gold: tuple, pred: tuple, gold_text: str = "", pred_text: str = "") -> bool:
    """Whether a parsed answer states the gold: math-verify's equivalence, then the readings of the docstring."""
    gold = tuple(_settle_integers(g) for g in gold)  # first: math-verify can take minutes over 2^{1/2^{1000}}
    pred = tuple(_settle_integers(p) for p in pred)
    start = time.perf_counter()
    if _verify(list(gold), list(pred)):
        return True
    if time.perf_counter() - start > 1.0:
        return False  # math-verify struggled (or timed out): each reading would cost as much again
    times = _clock(gold_text), _clock(pred_text)
    if None not in times and (times[0][3] or times[1][3]):
        return times[0][:3] == times[1][:3]
    gold_value = next(g for g in gold if not isinstance(g, str))
    pred_value = next(p for p in pred if not isinstance(p, str))
    if _same_to_places(gold_value, pred_value):
        return True
    return any(
        _verify(g, p) for g, p in _readings(gold_value, pred_value) if not (g == gold_value and p == pred_value)
    )


def math_correct(text: str, gold: Any, last_number_fallback: bool = True) -> float | None:
    """1.0 when the response's final answer equals the gold, 0.0 when not or when it has none, None for bad gold."""
    if gold is None or isinstance(gold, bool):
        return None
    gold_found = extract_gold(str(gold).strip())
    parsed_gold = parse_answer(gold_found[0]) if gold_found else None
    if parsed_gold is None:
        return None
    found = extract_answer(text, last_number_fallback)
    parsed = parse_answer(found[0]) if found else None
    if parsed is None:
        return 0.0
    return 1.0 if equivalent(parsed_gold, parsed, gold_found[0], found[0]) else 0.0


@reward("math", kind="rule")
def math_reward(completions: list, answer: list, *, last_number_fallback: bool = True, **kwargs) -> list[float | None]:
    """Final answer equivalent to the `answer` column (math-verify): 1.0 or 0.0; None when the gold is not math.

    Args:
        completions: responses, strings or chat message lists.
        answer: the gold answers, one per completion ("42", "\\frac{1}{2}", "(0, 1]", "#### 7", ...).
        last_number_fallback: when no `\\boxed{}`, `<answer>` tag or "answer is" phrase names the answer, read the
            response's last LaTeX span or expression; false scores such responses 0.
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
    tags = ANSWER_TAG.findall(text)
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
