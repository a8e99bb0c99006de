"""The `math` reward's answer policy, rule by rule, on literal strings: which span is the final answer
(`rewards.answer_extraction`), how numbers and LaTeX are read, and each equivalence convention of
`rewards.math_reward`."""

from __future__ import annotations

import pytest

from rewards.answer_extraction import expressions, extract_gold, find_boxes, math_spans, read_number
from rewards.math_reward import extract_answer, math_reward, parse_gold


def score(completion: str, gold: str, **settings) -> float | None:
    return math_reward([completion], [gold], **settings)[0]


# --- 1. explicit markers: the last box, answer tag or final-answer phrase -------------------------------------------

MARKERS = [
    ("The answer is 3. Check: \\boxed{4}, 5", ("4", "boxed")),  # a box beats an earlier "answer is"
    ("\\boxed{3} and then 7", ("3", "boxed")),
    ("$\\boxed{\\{1,2\\}}$", ("\\{1,2\\}", "boxed")),  # escaped braces do not close the box
    ("\\fbox{12}", ("12", "boxed")),
    # the boxes of one final statement are one answer
    ("\\boxed{-2} \\quad\\text{and}\\quad \\boxed{1}.", ("-2, 1", "boxed")),
    ("\\boxed{1} and \\boxed{2} and \\boxed{3}", ("1, 2, 3", "boxed")),
    ("\\boxed{1},\\boxed{2},\\boxed{3}", ("1, 2, 3", "boxed")),
    ("$$\\boxed{(3, 3)} \\text{ for part (a) and } \\boxed{(1, 1)}$$", ("(3, 3), (1, 1)", "boxed")),
    ("\\( y_1 = \\boxed{x+1} \\) and \\( y_2 = \\boxed{x-1} \\)", ("x+1, x-1", "boxed")),
    ("\\boxed{1} papers and \\boxed{2} bins", ("1, 2", "boxed")),  # up to two unit words between them
    # ... but not boxes of different sentences, or with prose between them
    ("The first part is \\boxed{3}. The second part is \\boxed{5}.", ("5", "boxed")),
    ("\\boxed{1} no no no no no \\boxed{2}", ("2", "boxed")),
    ("We get \\boxed{3} so the final answer is \\boxed{5}", ("5", "boxed")),
    # an answer tag, read by the same policy
    ("<think>...</think><answer>\\frac{1}{2}</answer>", ("\\frac{1}{2}", "answer_tag")),
    ("<answer>The answer is 42 apples</answer>", ("42", "answer_tag")),
    ("First: <answer>42</answer> Second: <answer>43</answer>", ("43", "answer_tag")),
    ("<answer>1e6</answer>", ("1000000", "answer_tag")),
    # a final-answer phrase with its whole math span (Minerva / lm-eval MATH format)
    ("Final Answer: The final answer is $(2, 5)$. I hope it is correct.", ("(2, 5)", "final_answer")),
    ("Final Answer: The final answer is $14{,}916$. I hope it is correct.", ("14{,}916", "final_answer")),
    ("Final Answer: The volume of $ABCD$ is 120. I hope it is correct.", ("120", "final_answer")),
    ("### Final Answer\n42", ("42", "final_answer")),
    ("**Final Answer**\n\n$x = 2$", ("x = 2", "final_answer")),
    ("Before the final answer, let me check: 2+2=4. So we get 5.", ("5", "number")),  # no verb: not a marker
    ("The final answer to the question is 7 apples.", ("7", "final_answer")),
    # a later final-answer phrase beats an earlier (intermediate) box, and a box inside the phrase is the box
    (
        "so $0.04 \\cdot 5000 = \\boxed{200}$. ... Final Answer: The final answer is $10,455$.",
        ("10,455", "final_answer"),
    ),
    ("The final answer is $\\boxed{5}$.", ("5", "boxed")),
    # the reasoning does not count
    ("<think>it is \\boxed{7}</think>The answer is 3.", ("3", "phrase")),
]


@pytest.mark.parametrize(("text", "expected"), MARKERS)
def test_explicit_markers(text, expected):
    assert extract_answer(text) == expected


def test_a_box_cut_off_inside_is_no_box_but_a_gold_box_is_closed_at_the_end():
    assert find_boxes("so \\boxed{\\frac{1}{2") == []
    assert extract_gold("\\boxed{W(n) = 1 \\text{ and } W(n) = -1") == ("W(n) = 1 \\text{ and } W(n) = -1", "boxed")


# --- 2. "answer is" phrases -----------------------------------------------------------------------------------------

PHRASES = [
    ("The answer is 12 apples.", ("12", "phrase")),
    ("the answer is 3.5. Then we stop.", ("3.5", "phrase")),
    ("The answer is $\\frac{3}{4}$ cup.", ("\\frac{3}{4}", "phrase")),
    ("The answer is $1$ and $2$.", ("1, 2", "phrase")),
    ("The answer is 3 or 4.", ("3, 4", "phrase")),
    ("Answer: -4", ("-4", "phrase")),
    ("The answer is 50%.", ("50\\%", "phrase")),
    ("My answer to part (b) is 9.", ("9", "phrase")),
    ("The answer is **18**.", ("18", "phrase")),  # markdown emphasis is not part of the expression
    ("**Answer: 18**", ("18", "phrase")),
]


@pytest.mark.parametrize(("text", "expected"), PHRASES)
def test_answer_phrases(text, expected):
    assert extract_answer(text) == expected


def test_a_phrase_with_nothing_after_it_is_skipped():
    assert extract_answer("The answer is") is None
    assert extract_answer("The final answer must be checked. So x = 3") == ("x = 3", "expression")


# --- 3. no marker: the last LaTeX span or prose expression, whichever comes last -----------------------------------

UNANCHORED = [
    ("Dividing both sides, we get $x = \\frac{3}{4}$.", ("x = \\frac{3}{4}", "latex")),
    ("The golden ratio is $\\frac{1+\\sqrt{5}}{2}$.", ("\\frac{1+\\sqrt{5}}{2}", "latex")),
    ("$5 \\times 10^3$", ("5 \\times 10^3", "latex")),
    ("Answer \\( (9+1) \\)", ("(9+1)", "latex")),
    ("Answer $$ \n 9 \n $$", ("9", "latex")),
    ("Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", ("\\frac{1}{2} \\$ = \\frac{10}{9}", "latex")),  # escaped $
    ("$21,16$ or $11$", ("21,16, 11", "latex")),  # spans joined by "or" are one list
    ("The roots are $x=2$ and $x=3$.", ("x=2, x=3", "latex")),
    ("We have $x = 2$, so the total is 15 apples.", ("15", "number")),  # a later prose number wins
    ("So, the ordered pair is $(7, 6)$. <|im_start|>user", ("(7, 6)", "latex")),
    # currency: a `$` followed by a digit does not close a span
    ("She pays $10,000 + $200 = $10,200.", ("10200", "number")),
    ("Therefore, the total cost is $12.50.", ("12.5", "number")),
    # prose expressions, never the last digits of one
    ("we get x = \\frac{3}{4}.", ("x = \\frac{3}{4}", "expression")),
    ("The golden ratio is \\frac{1+\\sqrt{5}}{2}.", ("\\frac{1+\\sqrt{5}}{2}", "expression")),
    ("12 + 7 = 19", ("12 + 7 = 19", "expression")),
    ("so x = 1 or x = 2", ("x = 1, x = 2", "expression")),
    ("2 and then 4", ("4", "number")),
    ("She sells 16 - 3 - 4 = 9 eggs, so 9 * 2 = 18.", ("9 * 2 = 18", "expression")),
    ("There are 5 apples (2 red).", ("2", "number")),
    ("Final result 12 (approximately", ("12", "number")),
    ("The area is 10 cm^2", ("10", "number")),  # the `^2` of a unit is not an expression
    ("5 I think.", ("5", "number")),
    ("So, Janet makes **$18** every day.", ("18", "number")),  # a lone `I` or `a` is a word, not a variable
    ("x = y", ("x = y", "expression")),  # a whole answer may have no digit
    ("B", ("B", "expression")),
]


@pytest.mark.parametrize(("text", "expected"), UNANCHORED)
def test_unanchored_answers(text, expected):
    assert extract_answer(text) == expected


def test_last_number_fallback_off_reads_markers_only():
    assert extract_answer("12 + 7 = 19", last_number_fallback=False) is None
    assert extract_answer("we get $x = 3$", last_number_fallback=False) is None
    assert extract_answer("so \\boxed{19}", last_number_fallback=False) == ("19", "boxed")
    assert extract_answer("The answer is 19", last_number_fallback=False) == ("19", "phrase")


# --- 4. numbers ------------------------------------------------------------------------------------------------------

NUMBERS = [
    ("AZYUK2A", None),  # a digit inside a word is no number
    ("Final answer: -4", ("-4", "final_answer")),
    ("The result is −3.", ("-3", "number")),  # Unicode minus
    (".25", ("0.25", "number")),
    ("It is .5 of it.", ("0.5", "number")),
    ("The total is 1,000 dollars", ("1000", "number")),
    ("7,425,000", ("7425000", "number")),
    ("1 000", ("1000", "number")),
    ("It is 1e-6 m", ("0.000001", "number")),
    ("That is 6.02 × 10^23 molecules.", ("602000000000000000000000", "number")),
    ("It is 5 \\times 10^{3}.", ("5000", "number")),
    ("Soucis : 2,74 $ a..", ("2.74", "number")),  # a decimal comma in running prose
    ("1,2", ("1,2", "expression")),  # a bare answer: the list 1, 2
    ("0,111", ("0,111", "expression")),
]


@pytest.mark.parametrize(("text", "expected"), NUMBERS)
def test_numbers(text, expected):
    assert extract_answer(text) == expected


def test_a_unit_glued_to_a_number_is_dropped_when_parsed():
    assert extract_answer("not it's not 10 it's 1,000.99m²") == ("1,000.99m", "expression")
    assert score("not it's not 10 it's 1,000.99m²", "1000.99") == 1.0


def test_read_number():
    assert read_number("14{,}916") == "14916"
    assert read_number("1\\,000") == "1000"
    assert read_number("-1.50") == "-1.5"
    assert read_number("50%") == "50\\%"
    assert read_number("2,74") is None and read_number("2,74", decimal_comma=True) == "2.74"
    assert read_number("0,5", decimal_comma=True) == "0.5"
    assert read_number("1,234", decimal_comma=True) == "1234"
    assert read_number("x") is None and read_number("1/2") is None


def test_spans_and_expressions():
    assert math_spans("a $x$ b $$y$$ c \\(z\\) d \\[w\\]") == [(2, 5, "x"), (8, 13, "y"), (16, 21, "z"), (24, 29, "w")]
    assert math_spans("$ 9 \n\n $") == []  # a span never crosses a paragraph break
    assert [e[2] for e in expressions("Step 2: I get x = 3, then 4 apples.")] == ["2", "x = 3", "4"]


def test_doubly_escaped_latex_is_read_once_escaped():
    assert extract_answer("so \\\\boxed{\\\\frac{1}{2}}") == ("\\frac{1}{2}", "boxed")


# --- 5. gold answers -------------------------------------------------------------------------------------------------

GOLDS = [
    ("Janet makes 9 * 2 = 18 dollars.\n#### 18", ("18", "number")),
    ("... Therefore, $\\boxed{14{,}916}$ is our answer.", ("14{,}916", "boxed")),
    ("$\\boxed{1}\\boxed{2}$", ("1, 2", "boxed")),
    ("\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", ("1, -2", "boxed")),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "expression")),
    ("\\begin{cases} a+b=\\frac12 \\\\ a-b=\\sqrt3 \\end{cases}", None),  # checked below: parses as a system
    ("x \\in [0.5, \\infty)", ("x \\in [0.5, \\infty)", "expression")),
    ("10/9", ("10/9", "expression")),
    ("Paris", None),
]


@pytest.mark.parametrize(("gold", "expected"), GOLDS)
def test_gold_extraction(gold, expected):
    if expected is not None or gold == "Paris":
        assert extract_gold(gold) == expected


def test_golds_with_matrices_cases_intervals_sets_and_tuples_parse_as_such():
    from sympy import Eq, FiniteSet, Interval, MatrixBase, Tuple

    assert isinstance(parse_gold("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}")[0], MatrixBase)
    system = parse_gold("\\begin{cases} a+b=\\frac12 \\\\ a-b=\\sqrt3 \\end{cases}")[0]
    assert all(isinstance(e, Eq) for e in system.args) and len(system.args) == 2
    assert isinstance(parse_gold("(0, 1]")[0], Interval)
    assert isinstance(parse_gold("\\{1, 2, 3\\}")[0], FiniteSet)
    assert isinstance(parse_gold("(1, 2, 3)")[0], Tuple)
    assert parse_gold("Paris") is None and parse_gold("") is None


# --- 6. the issue's cases, end to end --------------------------------------------------------------------------------

ISSUE = [
    ("Dividing both sides, we get $x = \\frac{3}{4}$.", "4", 0.0),
    ("Dividing both sides, we get $x = \\frac{3}{4}$.", "\\frac{3}{4}", 1.0),
    ("The golden ratio is $\\frac{1+\\sqrt{5}}{2}$.", "2", 0.0),
    ("$5 \\times 10^3$", "3", 0.0),
    ("$5 \\times 10^3$", "5000", 1.0),
    (".25", "25", 0.0),
    (".25", "\\frac{1}{4}", 1.0),
    ("$14{,}916$", "14", 0.0),
    ("$14{,}916$", "14916", 1.0),
    ("Final Answer: The final answer is $(2, 5)$. I hope it is correct.", "5", 0.0),
    ("Final Answer: The final answer is $(2, 5)$. I hope it is correct.", "(2, 5)", 1.0),
    ("<think>...</think><answer>\\frac{1}{2}</answer>", "0.5", 1.0),
    ("\\boxed{-2} \\quad\\text{and}\\quad \\boxed{1}", "1", 0.0),
    ("\\boxed{-2} \\quad\\text{and}\\quad \\boxed{1}", "1, -2", 1.0),
    ("\\boxed{-2}", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", 0.0),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", 1.0),
    ("\\boxed{(1, -2)}", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", 1.0),
    ("AZYUK2A", "2", 0.0),
    ("The answer is", "5", 0.0),
    ("\\boxed{42}", "Paris", None),
    ("\\boxed{42}", "", None),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), ISSUE)
def test_issue_cases(completion, gold, expected):
    assert score(completion, gold) == expected


# --- 7. equivalence conventions --------------------------------------------------------------------------------------

CONVENTIONS = [
    # decimals to six places, math-verify's rounding
    ("<answer>42.0000001</answer>", "42", 1.0),
    ("<answer>42.001</answer>", "42", 0.0),
    # a rounded or truncated decimal of a gold with no exact decimal form
    ("\\boxed{1.732}", "\\sqrt{3}", 1.0),
    ("\\boxed{1.73}", "\\sqrt{3}", 1.0),
    ("\\boxed{1.7}", "\\sqrt{3}", 0.0),  # too few digits
    ("\\boxed{1.733}", "\\sqrt{3}", 0.0),  # neither rounded nor truncated
    ("\\boxed{0.33}", "\\frac{1}{3}", 1.0),
    ("\\boxed{0.3}", "\\frac{1}{3}", 0.0),
    ("\\boxed{125.663}", "40\\pi", 1.0),  # truncated
    ("\\boxed{0.7}", "0.75", 0.0),  # 0.75 has an exact decimal form
    ("\\boxed{0.8}", "0.75", 0.0),
    ("\\boxed{(0.6, 2.6667]}", "(\\frac{3}{5}, \\frac{8}{3}]", 1.0),
    (
        "\\boxed{\\begin{cases} a+b=0.5\\\\ a-b=1.732\\end{cases}}",
        "\\begin{cases} a+b=\\frac12 \\\\ a-b=\\sqrt3 \\end{cases}",
        1.0,
    ),
    # a decimal exponent is the exact rational, and fractional powers take positive variables
    ("$\\frac{v_0 (\\frac{r_0}{r + r_0})^{0.5}}{r + r_0}$", "\\frac{v_0}{r_0} \\frac{1}{(1+r/r_0)^{3/2}}", 1.0),
    ("\\boxed{\\sqrt{x^2}}", "|x|", 1.0),
    ("\\boxed{\\sqrt{x^2}}", "x", 0.0),  # only when both sides have fractional powers are variables positive
    # a constant power that is an integer to 15 digits
    ("\\boxed{[2^{\\frac{1}{2^{1000}}}, \\infty)}", "[1, +\\infty)", 1.0),
    # vectors, the imaginary unit, functions, times of day
    ("\\boxed{[0.5, 1]}", "\\begin{matrix} \\frac12 \\\\ 1 \\end{matrix}", 1.0),
    ("\\boxed{i(2-i)}", "1+2i", 1.0),
    ("\\boxed{y = 2x + 3}", "f(x) = 2x + 3", 1.0),
    ("\\boxed{y = 2x + 4}", "f(x) = 2x + 3", 0.0),
    ("\\boxed{20:34:00}", "20:34", 1.0),
    ("\\boxed{08:34 \\text{P.M.}}", "20:34", 1.0),
    ("\\boxed{08:34 \\text{A.M.}}", "20:34", 0.0),
    ("\\boxed{12:00}", "12:00", 1.0),
    # cleaning: mixed numbers, degrees in trigonometry, \mathrm{e}, \pm, chains, digit groups, units
    ("\\boxed{1.5}", "1 1/2", 1.0),
    ("\\boxed{\\cos(x)}", "\\sin(90^{\\circ}-x)", 1.0),
    ("\\boxed{30}", "30^\\circ", 1.0),
    ("$1 - \\frac{1}{\\mathrm{e}}$", "$1 - \\frac{1}{\\mathrm{e}}$", 1.0),
    ("$1 + \\frac{1}{\\mathrm{e}}$", "$1 - \\frac{1}{\\mathrm{e}}$", 0.0),
    (
        "\\boxed{x = \\frac{1}{2}, x = \\frac{-1 \\pm \\sqrt{13}}{4}}",
        "x = \\frac{1}{2}, x = \\frac{-1 \\pm \\sqrt{13}}{4}",
        1.0,
    ),
    ("$17 \\bmod 5 = 2$", "2", 1.0),
    ("\\boxed{1 000}", "1000", 1.0),
    ("\\boxed{10 \\text{ cm}}", "10", 1.0),
    ("so \\\\boxed{\\\\frac{1}{2}}", "\\\\frac{1}{2}", 1.0),
    # sets are unordered, tuples and intervals are not; unreduced fractions are numbers
    ("\\boxed{4, 10, -2}", "10, 4, -2", 1.0),
    ("\\boxed{(4, 10)}", "(10, 4)", 0.0),
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", 1.0),
    ("$-2 \\le x \\le 7$", "$x \\in [-2,7]$", 0.0),  # math-verify's default: a relation does not answer a set
    ("$x \\in [-2,7]$", "$-2 \\le x \\le 7$", 1.0),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), CONVENTIONS)
def test_equivalence_conventions(completion, gold, expected):
    assert score(completion, gold) == expected
