"""Which part of a response is its final answer: the span policy of the `math` reward (text only, no parsing).

`extract_answer(text)` returns `(answer, how)`: the answer as a LaTeX string, ready to be parsed as mathematics,
and the rule that found it. It reads the part after the last `</think>` (all of it when there is none) and takes,
in order:

1. The last explicit marker, whichever of these starts last in the text:
   - `\\boxed{...}` / `\\fbox{...}` (how 'boxed'). Boxes of one final statement form one answer: the last box and
     the boxes before it in the same sentence, separated from it only by commas, "and"/"or", `\\quad`, math
     delimiters, `\\text{...}`, labels like `y_2 =` and at most two other words (`\\boxed{1} papers and \\boxed{2}
     bins`; `\\boxed{-2} \\quad\\text{and}\\quad \\boxed{1}` is the set -2, 1);
   - an `<answer>...</answer>` tag (how 'answer_tag'), whose content is read by this same policy;
   - a "final answer" phrase (how 'final_answer'): "final answer is", "Final Answer:", "the final answer to the
     question is", ... followed by its answer (see "after a phrase" below).
2. The last "answer is" / "answer:" phrase (how 'phrase'): "The answer is 12 apples." gives 12.
3. Without any marker (and unless `last_number_fallback` is off), whichever comes last of:
   - the last LaTeX math span, `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]` (how 'latex'), together with the
     spans before it joined by commas, "and" or "or" (`$21,16$ or $11$`). A `$` followed by a digit that would
     close a span is a currency sign (`$10,000 + $200`), not a delimiter;
   - the last mathematical expression of the prose (how 'expression', or 'number' when it is one number): a
     run of numbers, operators, LaTeX commands and single-letter variables, so `we get x = \\frac{3}{4}.` gives
     `x = \\frac{3}{4}`, never `4`. Numbers respect word boundaries (`AZYUK2A` has none), signs, leading-dot
     decimals (`.25`), thousands separators (`1,234`, `14{,}916`, `1 000`) and scientific notation (`1e-6`,
     `5 \\times 10^3`). In running prose a comma between digits that is not a thousands separator is a decimal
     comma (`2,74 $` is 2.74); a bare answer such as `1,2` is mathematics, the list 1, 2. The parts of a list
     joined by "and"/"or" are one answer (`x = 1 or x = 2`).

After a phrase, the answer is the math span (or spans joined by "and"/"or"/commas) that follows it, whole (`The
final answer is $(2, 5)$. I hope it is correct.` gives `(2, 5)`), else the first expression of the rest of the
sentence. A marker with nothing readable after it is skipped. A LaTeX span is always returned whole, to be parsed
as LaTeX: it is never mined for its last digits.

Text escaped twice (`\\\\frac`, as in some JSON data) is read once-escaped first. `extract_gold(gold)` reads a gold
answer the same way, except that a GSM8K solution gives what follows its `####` and a box left unclosed runs to the
end of the gold (a gold is never cut off; a response cut off inside its box has no box).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from rewards.base import final_answer_text

_BOX_HEAD = re.compile(r"\\(?:boxed|fbox)\s*\{")
# What may separate two boxes of one final statement: punctuation, connectives, spacing commands, math delimiters,
# text inside \text{} (the statement is in math mode), labels such as `y_2 =`, and at most two other words (units:
# `\boxed{1} papers and \boxed{2} bins`).
_BOX_GAP_NEUTRAL = re.compile(
    r"\s|[,;&~+\-]|\$|\\[()\[\],;:! ]|\\\\|\\q?quad\b|\\(?:text|mathrm|mbox|textbf)\s*\{[^{}]*\}|\band\b|\bor\b"
    r"|(?<![A-Za-z])[A-Za-z](?:_\{?\w+\}?)?\s*="
)
_SPAN_GAP = re.compile(r"\s*(?:,|;|\band\b|\bor\b)(?:\s|,|;|\band\b|\bor\b)*", re.IGNORECASE)
# "final answer" with a verb, a colon or an equals sign, or as a heading on its own line (`### Final Answer`)
_FINAL_HEAD = re.compile(
    r"\bfinal\s+answer\b\**(?:\s+(?:to|for|of)\b[^.\n$]{0,60}?)?(?:\s*(?:is\b|are\b|would be\b|will be\b|:|=)\s*:?"
    r"|[ \t*#]*(?=\n))",
    re.IGNORECASE,
)
_PHRASE_HEAD = re.compile(
    r"\banswer\b\**(?:\s+(?:to|for|of)\b[^.\n$]{0,60}?)?\s*(?:is\b|are\b|would be\b|will be\b|:|=)\s*:?",
    re.IGNORECASE,
)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n|\bI hope\b")

# Tokens of prose, for finding its mathematical expressions. A text command keeps its braces (`\text{cm}`).
_TOKEN = re.compile(
    r"(?P<cmd>\\{1,2}(?:text|mathrm|mathbf|textbf|operatorname|mbox|begin|end)\s*\{[^{}]*\}|\\{1,2}[A-Za-z]+\*?|\\.)"
    r"|(?P<num>(?:\d+(?:[.,:]\d+)*|\.\d+)(?:[eE][-+]?\d+(?![A-Za-z]))?)"
    r"|(?P<word>[A-Za-z]+)"
    r"|(?P<op>[=+\-*/^_<>()\[\]{}|,&~%−×÷·√π∞≤≥≠±])"
    r"|(?P<space>[ \t]+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_MATH_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "sinh", "cosh", "tanh", "arcsin", "arccos", "arctan", "log",
               "ln", "exp", "sqrt", "pi"}  # fmt: skip
_OPENERS, _CLOSERS = "([{", ")]}"

# A number as a whole answer. `sep` is a thousands separator (groups of three digits); with `_COMMA_DECIMAL`, a comma
# that is not one is a decimal comma.
_THOUSANDS = r"[1-9]\d{0,2}(?:(?P<sep>,|\{,\}|\\,|\s)\d{3})(?:(?P=sep)\d{3})*"
_EXPONENT = r"(?P<exp>[eE][-+]?\d+|\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*(?P<exp10>[-+−]?\d+)\s*\}?)?"
_NUMBER = re.compile(
    rf"(?P<sign>[-+−])?\s*(?:(?P<int>{_THOUSANDS}|\d+)(?P<frac>\.\d+)?|(?P<dotfrac>\.\d+)){_EXPONENT}(?P<pct>\s*\\?%)?"
)
_COMMA_DECIMAL = re.compile(
    r"(?P<sign>[-+−])?(?:(?P<int>[1-9]\d*),(?P<frac>\d{1,2}|\d{4,})|(?P<zero>0),(?P<zfrac>\d+))"
    rf"{_EXPONENT}(?P<pct>\s*\\?%)?"
)


def undouble_backslashes(latex: str) -> str:
    """`\\\\frac{1}{2} \\\\\\\\ 3` (LaTeX escaped twice, as in some JSON data) -> `\\frac{1}{2} \\\\ 3`: when every
    run of backslashes is even and one of two stands before a letter."""
    runs = re.findall(r"\\+", latex)
    if runs and all(len(r) % 2 == 0 for r in runs) and re.search(r"(?<!\\)\\\\[A-Za-z]", latex):
        return re.sub(r"\\+", lambda m: "\\" * (len(m.group()) // 2), latex)
    return latex


def find_boxes(text: str, close_at_end: bool = False) -> list[tuple[int, int, str]]:
    """Every `\\boxed{...}` / `\\fbox{...}` as (start, end, content), braces balanced. An unclosed box is dropped
    (the response was cut off inside it), or with `close_at_end` runs to the end of the text (a typo in a gold)."""
    out: list[tuple[int, int, str]] = []
    for m in _BOX_HEAD.finditer(text):
        if out and m.start() < out[-1][1]:
            continue  # a box nested in the previous one is part of it
        depth, i = 0, m.end() - 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2  # \{ and \} are literal braces
                continue
            depth += {"{": 1, "}": -1}.get(c, 0)
            if depth == 0:
                out.append((m.start(), i + 1, text[m.end() : i].strip()))
                break
            i += 1
        else:
            if close_at_end:
                out.append((m.start(), len(text), text[m.end() :].strip()))
    return out


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None when there is none."""
    boxes = find_boxes(text)
    return boxes[-1][2] if boxes else None


def _box_group(text: str, boxes: list[tuple[int, int, str]]) -> tuple[int, str] | None:
    """(start, answer) of the final statement's boxes: the last non-empty box and the boxes joined to it."""
    boxes = [b for b in boxes if b[2]]
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1] : group[0][0]]
        rest = _BOX_GAP_NEUTRAL.sub(" ", gap)
        if len(gap) > 80 or re.search(r"[.!?]", rest) or not re.fullmatch(r"\s*(?:[A-Za-z]+\s+){0,2}", rest + " "):
            break
        group.insert(0, box)
    return group[0][0], ", ".join(b[2] for b in group)


def _closing(text: str, start: int, delim: str) -> int:
    """Index of the unescaped `delim` closing a span opened just before `start`; -1 when there is none."""
    i = start
    while True:
        j = text.find(delim, i)
        if j < 0:
            return -1
        if j > 0 and text[j - 1] == "\\":
            i = j + 1
            continue
        if delim == "$" and j + 1 < len(text) and text[j + 1].isdigit():
            return -1  # `$10,000 + $200`: currency signs, not math
        if "\n\n" in text[start:j]:
            return -1  # a math span never runs over a paragraph break
        return j


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """The LaTeX math spans of `text` as (start, end, content): `$$..$$`, `\\[..\\]`, `$..$`, `\\(..\\)`."""
    spans, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            opener, closer = "$$", "$$"
        elif text.startswith("\\[", i):
            opener, closer = "\\[", "\\]"
        elif text.startswith("\\(", i):
            opener, closer = "\\(", "\\)"
        elif text[i] == "$" and (i == 0 or text[i - 1] != "\\"):
            opener, closer = "$", "$"
        else:
            i += 1
            continue
        j = _closing(text, i + len(opener), closer)
        if j < 0 or not text[i + len(opener) : j].strip():
            i += len(opener)
            continue
        spans.append((i, j + len(closer), text[i + len(opener) : j].strip()))
        i = j + len(closer)
    return spans


def _span_group(text: str, spans: list, last: int, forward: bool = False) -> tuple[int, int, str]:
    """The span at index `last` with its neighbours joined by commas/'and'/'or' (following ones when `forward`)."""
    group = [spans[last]]
    others = spans[last + 1 :] if forward else reversed(spans[:last])
    for span in others:
        gap = text[group[-1][1] : span[0]] if forward else text[span[1] : group[0][0]]
        if not _SPAN_GAP.fullmatch(gap):
            break
        if forward:
            group.append(span)
        else:
            group.insert(0, span)
    return group[0][0], group[-1][1], ", ".join(s[2] for s in group)


def _math_letter(tokens: list, k: int) -> bool:
    """A single letter is a variable when an operator, bracket or command is next to it (spaces aside) or it touches
    a number (`2x`); otherwise it is a word (`I think`, `a cat`)."""
    for step in (-1, 1):
        j, touching = k + step, True
        while 0 <= j < len(tokens) and tokens[j][0] == "space":
            j, touching = j + step, False
        if 0 <= j < len(tokens):
            kind = tokens[j][0]
            if kind in ("op", "cmd") or (touching and kind == "num"):
                return True
    return False


def _classify(tokens: list) -> list[bool]:
    """Whether each token may be part of a mathematical expression (spaces are neutral: True)."""
    math = []
    alone = sum(kind != "space" for kind, _ in tokens) == 1  # a whole answer of one letter: `x`, `B`
    for k, (kind, value) in enumerate(tokens):
        if kind == "word":
            math.append(value.lower() in _MATH_NAMES or (len(value) == 1 and (alone or _math_letter(tokens, k))))
        elif kind == "num":
            math.append(k == 0 or tokens[k - 1][0] != "word" or tokens[k - 1][1].lower() in _MATH_NAMES)  # not K2A
        else:
            math.append(kind in ("cmd", "op", "space"))
    return math


def _trim(run: str) -> str:
    """Strip sentence punctuation, dangling relations and unbalanced brackets from the ends of an expression."""
    while True:
        before = run
        run = run.strip().strip(",;:*_").strip()  # `*`/`_` at an end are markdown emphasis: **18**
        run = re.sub(r"^(?:=|<|>|\\approx|\\quad|\\,)+|(?:=|<|>|\\approx|\\quad|\\,)+$", "", run).strip()
        opened = sum(run.count(c) for c in _OPENERS) - sum(run.count(c) for c in _CLOSERS)
        # `12 (approximately` -> `12`, `(2 roots)` -> `2`; `[1/2, \infty)` is balanced and stays whole
        if run and (run[-1] in _OPENERS or (run[-1] in _CLOSERS and opened < 0)):
            run = run[:-1]
        elif run and (run[0] in _CLOSERS or (run[0] in _OPENERS and opened > 0)):
            run = run[1:]
        if run == before:
            return run


def _is_expression(run: str, whole: bool) -> bool:
    """A run of math tokens is an expression when it has a digit or a LaTeX command; a whole answer may also be
    letters and operators only (`x = y`) or one letter (`x`, a choice `B`)."""
    if re.search(r"\d|π|√|∞", run) or re.search(r"\\{1,2}(?!text|mathrm|mbox|quad|,)[A-Za-z]", run):
        return True
    letters = re.search(r"[A-Za-z]", run)
    return whole and bool(letters) and (bool(re.search(r"[=+\-*/^<>|]", run)) or len(run.strip("()")) == 1)


def expressions(text: str) -> list[tuple[int, int, str]]:
    """The mathematical expressions of a piece of prose as (start, end, text): runs of math tokens with a digit or a
    LaTeX command in them (see `_is_expression`). Newlines and words of prose end a run; runs joined by commas,
    'and' or 'or' are one list."""
    matches = list(_TOKEN.finditer(text))
    tokens = [(m.lastgroup, m.group()) for m in matches]
    math = _classify(tokens)
    runs, k = [], 0
    while k < len(tokens):
        if not math[k] or tokens[k][0] == "space":
            k += 1
            continue
        j = k
        while j < len(tokens) and math[j]:
            j += 1
        start = matches[k].start()
        raw = text[start : matches[j].start() if j < len(tokens) else len(text)]
        run = _trim(raw)
        whole = run == text.strip().rstrip(".").strip()
        if run and raw.lstrip()[:1] not in ("^", "_") and _is_expression(run, whole):  # not the `^2` of `cm^2`
            offset = start + raw.find(run)
            runs.append((offset, offset + len(run), run))
        k = j
    return _join_listed(text, runs)


def _join_listed(text: str, runs: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Expressions separated only by commas, 'and' or 'or' are one list: `x = 1 or x = 2`, `2, 3 and 5`."""
    out: list[tuple[int, int, str]] = []
    for run in runs:
        if out and _SPAN_GAP.fullmatch(text[out[-1][1] : run[0]]):
            out[-1] = (out[-1][0], run[1], f"{out[-1][2]}, {run[2]}")
        else:
            out.append(run)
    return out


def _decimal(text: str) -> str:
    value = Decimal(text)
    out = format(value, "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


def read_number(text: str, decimal_comma: bool = False) -> str | None:
    """The plain decimal string of `text` when the whole of it is one number, else None.

    `.25` -> '0.25', `14{,}916` -> '14916', `1 000` -> '1000', `1e-6` -> '0.000001', `5 \\times 10^3` -> '5000',
    `50%` -> '50\\%'; with `decimal_comma` (numbers in running prose) `2,74` -> '2.74'."""
    text = text.strip()
    m = _NUMBER.fullmatch(text) or (_COMMA_DECIMAL.fullmatch(text) if decimal_comma else None)
    if m is None:
        return None
    groups = m.groupdict()
    integer = re.sub(r"\D", "", groups.get("int") or "") or "0"
    frac = (groups.get("frac") or groups.get("dotfrac") or groups.get("zfrac") or "").lstrip(".,")
    digits = integer + ("." + frac if frac else "")
    exponent = groups.get("exp") or ""
    try:
        if groups.get("exp10") is not None:
            digits = str(Decimal(digits).scaleb(int(groups["exp10"].replace("−", "-"))))
        elif exponent:
            digits = str(Decimal(digits + exponent.strip()))
        digits = _decimal(digits)
    except (InvalidOperation, ValueError):
        return None
    sign = "-" if (groups.get("sign") or "") in ("-", "−") else ""
    return sign + digits + ("\\%" if groups.get("pct") else "")


def _as_answer(text: str, in_prose: bool) -> tuple[str, str]:
    """(answer, how) for an expression: a number in plain decimal form, else the expression as LaTeX."""
    number = read_number(text, decimal_comma=in_prose)
    return (number, "number") if number is not None else (text, "expression")


def _mask(text: str, spans: list) -> str:
    """`text` with the given spans blanked out (newlines, so that no expression runs across them)."""
    chars = list(text)
    for start, end, _ in spans:
        chars[start:end] = "\n" * (end - start)
    return "".join(chars)


def _read_after_phrase(text: str, start: int, said: bool) -> str | None:
    """The answer after a phrase ending at `start`: the math span(s) right there, else (after the sentence's first
    "is"/"=", unless the phrase `said` it: "Final Answer: The volume of $V$ is 120.") the span(s) or the first
    expression of the rest of the sentence; None when there is nothing to read."""
    rest = text[start:]
    lead = len(rest) - len(rest.lstrip(" \t\n*:#"))  # `### Final Answer\n42`
    spans = math_spans(rest)
    if spans and spans[0][0] == lead:
        return _span_group(rest, spans, 0, forward=True)[2]
    end = _SENTENCE_END.search(rest, lead)
    sentence = rest[lead : end.start() if end else len(rest)]
    verb = None if said else re.search(r"\b(?:is|are)\b|=", _mask(sentence, math_spans(sentence)))
    if verb:
        sentence = sentence[verb.end() :]
    spans = math_spans(sentence)
    found = expressions(_mask(sentence, spans))
    if spans and (not found or spans[0][0] < found[0][0]):
        return _span_group(sentence, spans, 0, forward=True)[2]
    if not found:
        return None
    return _as_answer(found[0][2], in_prose=found[0][2] != sentence.strip(" \t*:."))[0]


def _last_phrase(text: str, head: re.Pattern) -> tuple[int, str] | None:
    """(start, answer) of the last phrase matching `head` that has a readable answer after it."""
    for m in reversed(list(head.finditer(text))):
        said = bool(re.search(r"(?:\bis|\bare|\bbe|=)\s*:?\s*$", m.group(), re.IGNORECASE))
        answer = _read_after_phrase(text, m.end(), said)
        if answer:
            return m.start(), answer
    return None


def _explicit_marker(text: str, boxes: list) -> tuple[int, str, str] | None:
    """(start, answer, how) of the marker that starts last: box group, answer tag or final-answer phrase."""
    candidates = []
    group = _box_group(text, boxes)
    if group:
        candidates.append((group[0], group[1], "boxed"))
    tags = list(ANSWER_TAG.finditer(text))
    for tag in reversed(tags):
        inner = extract_answer(tag.group(1))
        if inner:
            candidates.append((tag.start(), inner[0], "answer_tag"))
            break
    final = _last_phrase(text, _FINAL_HEAD)
    if final:
        candidates.append((final[0], final[1], "final_answer"))
    return max(candidates, key=lambda c: c[0]) if candidates else None


def _unanchored(text: str, boxes: list) -> tuple[str, str] | None:
    """The last math span group or the last expression of the prose, whichever ends later."""
    spans = math_spans(text)
    prose = _mask(text, spans + boxes)
    found = expressions(prose)
    best: tuple[int, str, str] | None = None
    if spans:
        start, end, content = _span_group(text, spans, len(spans) - 1)
        best = (end, content, "latex")
    if found and (best is None or found[-1][1] > best[0]):
        start, end, run = found[-1]
        whole = not prose[:start].strip() and not prose[end:].strip(" \t\n.,;:")
        best = (end, *_as_answer(run, in_prose=not whole))
    return (best[1], best[2]) if best else None


def extract_answer(text: str, last_number_fallback: bool = True) -> tuple[str, str] | None:
    """Find the final answer of a response by the policy of the module docstring: (answer, how) or None.

    `how` is 'boxed', 'answer_tag', 'final_answer', 'phrase', 'latex', 'expression' or 'number'; the last three
    only with `last_number_fallback` (no marker names the answer)."""
    text = undouble_backslashes(final_answer_text(text or ""))
    boxes = find_boxes(text)
    marker = _explicit_marker(text, boxes)
    if marker:
        return marker[1], marker[2]
    phrase = _last_phrase(text, _PHRASE_HEAD)
    if phrase:
        return phrase[1], "phrase"
    return _unanchored(text, boxes) if last_number_fallback else None


def extract_gold(gold: str) -> tuple[str, str] | None:
    """Find the answer of a gold as `extract_answer` reads a response, except that a GSM8K solution gives what follows
    its `####` and a box left unclosed runs to the end (a gold is never cut off)."""
    if "####" in gold:
        gold = gold.rsplit("####", 1)[1]
    if len(find_boxes(gold, close_at_end=True)) > len(find_boxes(gold)):
        gold += "}"
    return extract_answer(gold)
