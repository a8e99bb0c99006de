"""Small Python programming tasks with tests, generated from a seed: the built-in source `builtin:code_tasks`.

Each task comes from one of the families in `FAMILIES` (sum of a list, reverse a string, n-th Fibonacci number,
merge two sorted lists, ...), instantiated with a random function name, parameter name, constants and example, so a
seed gives many distinct tasks. A family writes the reference solution (`canonical_solution`, a complete function)
and the test inputs; the expected outputs are computed by running that reference, so the tests are right by
construction. Every task's tests have at least two distinct expected values, so no constant answer passes them.

    rows = code_task_rows(size=200, seed=0)                      # all families
    rows = code_task_rows(100, 1, families=["list_sum"], max_difficulty=1)

Columns: `prompt` (one user turn: the function's name and signature, what it does, one example call, and the
request for a ```python block), `entry_point`, `tests` (assert statements, one per line, for the `code` reward:
`mode: fraction` counts each assert), `canonical_solution`, `answer` (always None: the tests are the gold), `task`
(the family), `difficulty` (1-3) and `source_id` (`code_tasks/<seed>/<i>`). Rows are deterministic for
(seed, size, args), and the first k rows of a size-n set are the size-k set. The tasks are written for this
project and share no names or text with HumanEval (a test checks entry points and 13-gram overlap), which stays an
eval and a decontamination set.

The embedded model (SmolLM2-135M-Instruct, T=0.7, 128 new tokens, `code` reward) solves difficulty-1 tasks about
40% of the time (91/224 samples), difficulty 2 about 3% (6/200) and difficulty 3 about 5% (4/88).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from posttrain.errors import DataError, did_you_mean, one_of

ARGS = ("families", "max_difficulty", "min_difficulty")
LIST_PARAMS = ("xs", "nums", "numbers", "values", "items", "lst", "data", "arr")
STRING_PARAMS = ("s", "text", "string", "phrase")
WORDS = (
    "apple", "banana", "cherry", "river", "stone", "cloud", "tiger", "piano", "rocket", "garden", "silver", "window",
    "planet", "forest", "candle", "bridge", "orange", "yellow", "dragon", "pencil", "summer", "winter", "castle",
)  # fmt: skip
FLOAT_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Task:
    """One instantiated task: what the prompt says, the reference source and the test inputs (argument tuples;
    the first is the prompt's example)."""

    entry_point: str
    params: tuple[str, ...]
    description: str
    source: str
    cases: tuple[tuple[Any, ...], ...]


@dataclasses.dataclass(frozen=True)
class Family:
    """A kind of task. `names` lists every function name it may use (checked against HumanEval by a test)."""

    name: str
    difficulty: int
    names: tuple[str, ...]
    build: Callable[[random.Random], Task]


FAMILIES: dict[str, Family] = {}


def family(name: str, difficulty: int, names: Sequence[str]):
    """Register a task builder `fn(rng, entry_point) -> Task` as a family."""

    def register(fn: Callable[[random.Random, str], Task]):
        names_ = tuple(names)
        FAMILIES[name] = Family(name, difficulty, names_, lambda rng: fn(rng, rng.choice(names_)))
        return fn

    return register


# ---------------------------------------------------------------------------------------------------- inputs


def _ints(rng: random.Random, n: int, lo: int = -9, hi: int = 20) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _int_lists(rng: random.Random, count: int, lo: int = -9, hi: int = 20, min_len: int = 0, max_len: int = 6):
    """`count` lists: a short one first (the example), then random lengths."""
    lists = [_ints(rng, rng.randint(max(min_len, 2), max(min_len, 3)), lo, hi)]
    lists += [_ints(rng, rng.randint(min_len, max_len), lo, hi) for _ in range(count - 1)]
    return lists


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


def _sentence(rng: random.Random, lo: int = 1, hi: int = 4) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _list_param(rng: random.Random) -> str:
    return rng.choice(LIST_PARAMS)


def _string_param(rng: random.Random) -> str:
    return rng.choice(STRING_PARAMS)


def _one_arg(values: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    return tuple((v,) for v in values)


# ---------------------------------------------------------------------------------------------------- difficulty 1


@family("list_sum", 1, ("total", "list_total", "sum_values", "sum_of_list", "add_all", "sum_numbers"))
def _list_sum(rng, ep):
    xs = _list_param(rng)
    cases = _int_lists(rng, 6)
    cases.append([])
    return Task(
        ep,
        (xs,),
        f"returns the sum of the numbers in the list `{xs}` (0 for an empty list)",
        f"def {ep}({xs}):\n    return sum({xs})\n",
        _one_arg(cases),
    )


@family("list_product", 1, ("product", "multiply_all", "list_product", "product_of_values", "times_all"))
def _list_product(rng, ep):
    xs = _list_param(rng)
    cases = _int_lists(rng, 6, -5, 9, max_len=5)
    cases.append([])
    return Task(
        ep,
        (xs,),
        f"returns the product of the numbers in the list `{xs}` (1 for an empty list)",
        f"def {ep}({xs}):\n    result = 1\n    for x in {xs}:\n        result *= x\n    return result\n",
        _one_arg(cases),
    )


_EXTREMES = {
    "largest": ("max", ("largest", "biggest", "max_value", "find_largest", "top_value")),
    "smallest": ("min", ("smallest", "min_value", "find_smallest", "lowest_value", "least")),
}


@family("list_extreme", 1, [n for _, names in _EXTREMES.values() for n in names])
def _list_extreme(rng, ep):
    which = next(k for k, (_, names) in _EXTREMES.items() if ep in names)
    xs = _list_param(rng)
    return Task(
        ep,
        (xs,),
        f"returns the {which} number in the non-empty list `{xs}`",
        f"def {ep}({xs}):\n    return {_EXTREMES[which][0]}({xs})\n",
        _one_arg(_int_lists(rng, 6, min_len=1)),
    )


_MAPS = {
    "add": (("add_offset", "shift_values", "add_to_each", "offset_all", "bump_values"), "+", "{k} added to"),
    "sub": (("subtract_offset", "lower_values", "subtract_from_each"), "-", "{k} subtracted from"),
    "mul": (("scale_values", "multiply_each", "scale_all", "times_each"), "*", "multiplied by {k}"),
}


@family("map_list", 1, [n for names, _, _ in _MAPS.values() for n in names])
def _map_list(rng, ep):
    kind = next(k for k, (names, _, _) in _MAPS.items() if ep in names)
    _, op, phrase = _MAPS[kind]
    xs = _list_param(rng)
    k = rng.randint(2, 9)
    what = phrase.format(k=k)
    what = f"every element of the list `{xs}` {what}" if kind == "mul" else f"{what} every element of the list `{xs}`"
    cases = _int_lists(rng, 5, -5, 15)
    cases.append([])
    return Task(
        ep,
        (xs,),
        f"returns a new list with {what}",
        f"def {ep}({xs}):\n    return [x {op} {k} for x in {xs}]\n",
        _one_arg(cases),
    )


@family("count_char", 1, ("count_char", "count_letter", "occurrences_of", "char_count", "letter_count"))
def _count_char(rng, ep):
    s = _string_param(rng)
    words = [_sentence(rng, 1, 3) for _ in range(6)]
    c = rng.choice(sorted({ch for w in words for ch in w if ch != " "}))
    words[0] = next((w for w in words if c in w), words[0])
    words.append("")
    return Task(
        ep,
        (s,),
        f"returns how many times the character '{c}' appears in the string `{s}`",
        f"def {ep}({s}):\n    return {s}.count({c!r})\n",
        _one_arg(words),
    )


@family("reverse_string", 1, ("reverse_text", "reversed_string", "backwards", "reverse_word", "mirror_text"))
def _reverse_string(rng, ep):
    s = _string_param(rng)
    return Task(
        ep,
        (s,),
        f"returns the string `{s}` reversed",
        f"def {ep}({s}):\n    return {s}[::-1]\n",
        _one_arg([_word(rng), _sentence(rng, 1, 3), _word(rng), "", "a", _sentence(rng, 2, 3)]),
    )


@family("palindrome", 1, ("is_mirror_word", "reads_same_backwards", "palindrome_check", "is_palindromic"))
def _palindrome(rng, ep):
    s = _string_param(rng)
    pals = ["level", "racecar", "noon", "kayak", "refer", "madam", "civic", "stats", "rotor", "abba"]
    rng.shuffle(pals)
    words = [pals[0], _word(rng), pals[1], _word(rng), pals[2], "ab", "a", _word(rng)]
    return Task(
        ep,
        (s,),
        f"returns True if the string `{s}` reads the same forwards and backwards, and False otherwise",
        f"def {ep}({s}):\n    return {s} == {s}[::-1]\n",
        _one_arg(words),
    )


_TEMPERATURES = {
    "c_to_f": (("celsius_to_fahrenheit", "c_to_f", "to_fahrenheit"), "c", "Celsius", "Fahrenheit", "c * 9 / 5 + 32"),
    "f_to_c": (("fahrenheit_to_celsius", "f_to_c", "to_celsius"), "f", "Fahrenheit", "Celsius", "(f - 32) * 5 / 9"),
}


@family("temperature", 1, [n for names, *_ in _TEMPERATURES.values() for n in names])
def _temperature(rng, ep):
    kind = next(k for k, (names, *_) in _TEMPERATURES.items() if ep in names)
    _, p, src, dst, formula = _TEMPERATURES[kind]
    temps = [5 * rng.randint(-4, 20) if kind == "c_to_f" else 32 + 9 * rng.randint(-4, 20)]  # an exact example
    temps += [rng.randint(-40, 120) for _ in range(5)]
    return Task(
        ep,
        (p,),
        f"converts a temperature `{p}` in degrees {src} to degrees {dst}, using the formula `{formula}`",
        f"def {ep}({p}):\n    return {formula}\n",
        _one_arg(temps),
    )


@family("clamp", 1, ("clamp", "clip_value", "keep_in_range", "bound_value", "limit_value"))
def _clamp(rng, ep):
    lo = rng.randint(-10, 10)
    hi = lo + rng.randint(5, 50)
    values = [lo + 1, lo - rng.randint(1, 9), hi + rng.randint(1, 9), lo, hi, rng.randint(lo, hi)]
    values = [values[rng.choice([1, 2])], *values]
    return Task(
        ep,
        ("x",),
        f"returns `x` limited to the range from {lo} to {hi}: {lo} if `x` is less than {lo}, {hi} if `x` is greater "
        f"than {hi}, and `x` itself otherwise",
        f"def {ep}(x):\n    return max({lo}, min({hi}, x))\n",
        _one_arg(values),
    )


_COMPARISONS = {
    ">": ("greater than", ("count_greater", "count_above", "how_many_above")),
    "<": ("less than", ("count_less", "count_below", "how_many_below")),
    "==": ("equal to", ("count_equal", "count_matches", "how_many_equal")),
}


@family("count_compare", 1, [n for _, names in _COMPARISONS.values() for n in names])
def _count_compare(rng, ep):
    op = next(k for k, (_, names) in _COMPARISONS.items() if ep in names)
    xs = _list_param(rng)
    k = rng.randint(0, 9)
    hi = 12 if op != "==" else k + 3
    lists = _int_lists(rng, 6, 0 if op != "==" else k - 2, hi, max_len=7)
    if op == "==":
        lists[0] = [k, rng.randint(0, 9), k]
    lists.append([])
    return Task(
        ep,
        (xs,),
        f"returns how many numbers in the list `{xs}` are {_COMPARISONS[op][0]} {k}",
        f"def {ep}({xs}):\n    return sum(1 for x in {xs} if x {op} {k})\n",
        _one_arg(lists),
    )


_PARITY = {
    "even": ("0", ("keep_even", "only_even", "get_evens", "even_values")),
    "odd": ("1", ("keep_odd", "only_odd", "get_odds", "odd_values")),
}


@family("filter_parity", 1, [n for _, names in _PARITY.values() for n in names])
def _filter_parity(rng, ep):
    which = next(k for k, (_, names) in _PARITY.items() if ep in names)
    xs = _list_param(rng)
    lists = _int_lists(rng, 6, 0, 20, max_len=7)
    lists[0] = [rng.randint(0, 9) * 2, rng.randint(0, 9) * 2 + 1, rng.randint(0, 9) * 2]
    lists.append([])
    return Task(
        ep,
        (xs,),
        f"returns a list of the {which} numbers in the list `{xs}`, in their original order",
        f"def {ep}({xs}):\n    return [x for x in {xs} if x % 2 == {_PARITY[which][0]}]\n",
        _one_arg(lists),
    )


@family("count_words", 1, ("word_count", "count_words", "number_of_words", "how_many_words"))
def _count_words(rng, ep):
    s = _string_param(rng)
    sentences = [_sentence(rng, 2, 3)] + [_sentence(rng, 1, 6) for _ in range(5)]
    return Task(
        ep,
        (s,),
        f"returns the number of words in the string `{s}`, where words are separated by spaces",
        f"def {ep}({s}):\n    return len({s}.split())\n",
        _one_arg(sentences),
    )


@family("repeat_string", 1, ("repeat_text", "repeat_word", "echo_text", "say_again"))
def _repeat_string(rng, ep):
    s = _string_param(rng)
    k = rng.randint(2, 5)
    return Task(
        ep,
        (s,),
        f"returns the string `{s}` repeated {k} times, with nothing in between",
        f"def {ep}({s}):\n    return {s} * {k}\n",
        _one_arg([_word(rng)[:3], _word(rng), "", "x", _word(rng)]),
    )


@family("list_average", 1, ("average", "mean_value", "list_mean", "avg", "arithmetic_mean"))
def _list_average(rng, ep):
    xs = _list_param(rng)
    lists = _int_lists(rng, 6, 0, 20, min_len=1)
    lists[0] = [2, 4, rng.choice([6, 9])]
    return Task(
        ep,
        (xs,),
        f"returns the average (arithmetic mean) of the numbers in the non-empty list `{xs}`",
        f"def {ep}({xs}):\n    return sum({xs}) / len({xs})\n",
        _one_arg(lists),
    )


@family("value_range", 1, ("value_range", "spread", "max_minus_min", "range_of_values"))
def _value_range(rng, ep):
    xs = _list_param(rng)
    return Task(
        ep,
        (xs,),
        f"returns the difference between the largest and the smallest number in the non-empty list `{xs}`",
        f"def {ep}({xs}):\n    return max({xs}) - min({xs})\n",
        _one_arg(_int_lists(rng, 6, min_len=1)),
    )


@family("count_upper", 1, ("count_capitals", "uppercase_count", "number_of_capitals", "capital_letters"))
def _count_uppercase(rng, ep):
    s = _string_param(rng)

    def mixed() -> str:
        return "".join(ch.upper() if rng.random() < 0.3 else ch for ch in _sentence(rng, 1, 3))

    return Task(
        ep,
        (s,),
        f"returns the number of upper-case letters in the string `{s}`",
        f"def {ep}({s}):\n    return sum(1 for c in {s} if c.isupper())\n",
        _one_arg([_sentence(rng, 2, 2).title(), *(mixed() for _ in range(5)), ""]),
    )


# ---------------------------------------------------------------------------------------------------- difficulty 2

_FIZZ_WORDS = (("Fizz", "Buzz"), ("Foo", "Bar"), ("Ping", "Pong"), ("Tick", "Tock"))
_FIZZ_DIVISORS = ((3, 5), (2, 7), (3, 4), (2, 5), (4, 7), (3, 7))


@family("fizzbuzz", 2, ("fizzbuzz", "fizzbuzz_value", "foo_bar", "ping_pong_word", "tick_tock"))
def _fizzbuzz(rng, ep):
    (a, b), (w1, w2) = rng.choice(_FIZZ_DIVISORS), rng.choice(_FIZZ_WORDS)
    cases = [a * b * rng.randint(1, 3), a * rng.choice([1, 2, 4]), b * rng.choice([1, 2, 3]), 1]
    cases += [rng.randint(1, 60) for _ in range(3)]
    cases = [cases[1], *cases]
    return Task(
        ep,
        ("n",),
        f"returns '{w1}{w2}' if `n` is divisible by both {a} and {b}, '{w1}' if it is divisible only by {a}, "
        f"'{w2}' if it is divisible only by {b}, and otherwise `n` as a string",
        f"def {ep}(n):\n    if n % {a * b} == 0:\n        return {w1 + w2!r}\n    if n % {a} == 0:\n"
        f"        return {w1!r}\n    if n % {b} == 0:\n        return {w2!r}\n    return str(n)\n",
        _one_arg(cases),
    )


@family("fibonacci", 2, ("nth_fibonacci", "fibonacci", "fib_number", "fibonacci_number"))
def _fibonacci(rng, ep):
    a, b = rng.choice([(0, 1), (0, 1), (1, 1), (2, 1), (1, 3), (2, 5)])
    start = "the n-th Fibonacci number" if (a, b) == (0, 1) else "the n-th number (counting from 0) of the sequence"
    rule = f"{start} that starts {a}, {b}, where each next number is the sum of the two before it"
    cases = [rng.randint(3, 6), 0, 1, 2, rng.randint(7, 12), rng.randint(13, 20)]
    return Task(
        ep,
        ("n",),
        f"returns {rule}",
        f"def {ep}(n):\n    a, b = {a}, {b}\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        _one_arg(cases),
    )


@family("factorial", 2, ("factorial", "fact", "factorial_of", "compute_factorial", "factorial_value"))
def _factorial(rng, ep):
    n = rng.choice(("n", "num", "k", "m"))
    cases = [rng.randint(3, 7), 0, 1, rng.randint(6, 8), rng.randint(9, 12)]
    return Task(
        ep,
        (n,),
        f"returns the factorial of the non-negative integer `{n}` (the product 1 * 2 * ... * {n}; the factorial of 0 "
        "is 1)",
        f"def {ep}({n}):\n    result = 1\n    for i in range(2, {n} + 1):\n        result *= i\n    return result\n",
        _one_arg(cases),
    )


@family("second_largest", 2, ("second_largest", "runner_up", "second_biggest", "next_to_max"))
def _second_largest(rng, ep):
    xs = _list_param(rng)
    lists = []
    while len(lists) < 6:
        candidate = _ints(rng, rng.randint(2 if not lists else 3, 3 if not lists else 7), 0, 30)
        if len(set(candidate)) >= 2:
            lists.append(candidate)
    lists.append([7, 7, 3])
    return Task(
        ep,
        (xs,),
        f"returns the second largest distinct value in the list `{xs}`, which holds at least two distinct values",
        f"def {ep}({xs}):\n    return sorted(set({xs}))[-2]\n",
        _one_arg(lists),
    )


@family("dedupe", 2, ("dedupe", "unique_in_order", "drop_duplicates", "distinct_values", "first_occurrences"))
def _dedupe(rng, ep):
    xs = _list_param(rng)
    lists = [_ints(rng, 5, 0, 4)] + [_ints(rng, rng.randint(0, 8), 0, 6) for _ in range(5)]
    return Task(
        ep,
        (xs,),
        f"returns a new list with the duplicates removed from the list `{xs}`, keeping the first occurrence of "
        "each value in its original order",
        f"def {ep}({xs}):\n    result = []\n    for x in {xs}:\n        if x not in result:\n"
        "            result.append(x)\n    return result\n",
        _one_arg(lists),
    )


@family("count_vowels", 2, ("count_vowels", "vowel_count", "number_of_vowels", "how_many_vowels"))
def _count_vowels(rng, ep):
    s = _string_param(rng)
    words = [_word(rng), "AEIOU xyz", *(_sentence(rng, 1, 3) for _ in range(4)), "rhythm", ""]
    words[1] = rng.choice(["Apple Pie", "AEIOU xyz", "Open Door"])
    return Task(
        ep,
        (s,),
        f"returns the number of vowels (a, e, i, o, u, in lower or upper case) in the string `{s}`",
        f"def {ep}({s}):\n    return sum(1 for c in {s}.lower() if c in 'aeiou')\n",
        _one_arg(words),
    )


@family("capitalize_words", 2, ("capitalize_words", "title_words", "capitalize_each", "upper_first_letters"))
def _capitalize_words(rng, ep):
    s = _string_param(rng)
    sentences = [_sentence(rng, 2, 3)] + [_sentence(rng, 1, 5) for _ in range(4)] + ["a"]
    return Task(
        ep,
        (s,),
        f"returns the string `{s}` of lower-case words separated by single spaces, with the first letter of every "
        "word in upper case",
        f"def {ep}({s}):\n    return ' '.join(w[0].upper() + w[1:] for w in {s}.split(' '))\n",
        _one_arg(sentences),
    )


@family("running_sum", 2, ("running_sum", "cumulative_sum", "prefix_sums", "running_total"))
def _running_sum(rng, ep):
    xs = _list_param(rng)
    lists = _int_lists(rng, 5, -5, 10)
    lists.append([])
    return Task(
        ep,
        (xs,),
        f"returns a list whose i-th element is the sum of the first i + 1 elements of the list `{xs}`",
        f"def {ep}({xs}):\n    result = []\n    total = 0\n    for x in {xs}:\n        total += x\n"
        "        result.append(total)\n    return result\n",
        _one_arg(lists),
    )


@family("digit_sum", 2, ("sum_of_digits", "add_digits", "digits_total", "digit_total"))
def _digit_sum(rng, ep):
    cases = [rng.randint(10, 999), 0, 7, rng.randint(1000, 99999), rng.randint(10, 99), rng.randint(10**5, 10**8)]
    return Task(
        ep,
        ("n",),
        "returns the sum of the decimal digits of the non-negative integer `n`",
        f"def {ep}(n):\n    return sum(int(d) for d in str(n))\n",
        _one_arg(cases),
    )


# The least common multiple, not the greatest common divisor: that is HumanEval/13, whose Euclid solution the mix's
# decontamination matches (so a gcd family would teach an eval item's solution).
@family("lcm", 2, ("lcm", "common_multiple", "least_common_multiple", "lcm_of", "smallest_common_multiple"))
def _lcm(rng, ep):
    cases = []
    for _ in range(5):
        g = rng.randint(1, 12)
        cases.append((g * rng.randint(1, 12), g * rng.randint(1, 12)))
    cases.insert(2, (7, 7))
    cases.append((rng.randint(2, 30), 1))
    return Task(
        ep,
        ("a", "b"),
        "returns the least common multiple of the positive integers `a` and `b`: the smallest positive integer "
        "that both divide",
        f"def {ep}(a, b):\n    m = max(a, b)\n    while m % a or m % b:\n        m += max(a, b)\n    return m\n",
        tuple(cases),
    )


@family("primality", 2, ("check_prime", "prime_test", "is_a_prime", "is_prime_number"))
def _primality(rng, ep):
    primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97]
    composites = [4, 6, 8, 9, 10, 12, 15, 21, 25, 27, 33, 35, 49, 51, 57, 77, 91]
    cases = [rng.choice(primes[2:]), rng.choice(composites), 1, 2, *rng.sample(primes, 2), *rng.sample(composites, 2)]
    return Task(
        ep,
        ("n",),
        "returns True if the integer `n` is a prime number and False otherwise (numbers below 2 are not prime)",
        # trial division up to d * d <= n: the `range(2, int(n ** 0.5) + 1)` idiom is a 13-gram of HumanEval/94
        f"def {ep}(n):\n    if n < 2:\n        return False\n    d = 2\n    while d * d <= n:\n"
        "        if n % d == 0:\n            return False\n        d += 1\n    return True\n",
        _one_arg(cases),
    )


@family("index_of_max", 2, ("index_of_max", "argmax", "position_of_largest", "where_is_max"))
def _index_of_max(rng, ep):
    xs = _list_param(rng)
    lists = _int_lists(rng, 5, 0, 20, min_len=1)
    lists.append([5, 9, 9, 1])
    return Task(
        ep,
        (xs,),
        f"returns the index of the largest number in the non-empty list `{xs}` (the first such index if the largest "
        "number appears more than once)",
        f"def {ep}({xs}):\n    return {xs}.index(max({xs}))\n",
        _one_arg(lists),
    )


@family("rotate_list", 2, ("rotate_left", "rotate_list", "shift_left", "rotate_by"))
def _rotate_list(rng, ep):
    xs = _list_param(rng)
    k = rng.randint(1, 3)
    lists = [_ints(rng, rng.randint(k + 2, 5), 0, 9)] + [_ints(rng, rng.randint(k, 7), 0, 9) for _ in range(4)]
    return Task(
        ep,
        (xs,),
        f"returns the list `{xs}` rotated left by {k} position{'s' if k > 1 else ''}: the first {k} element"
        f"{'s move' if k > 1 else ' moves'} to the end (`{xs}` has at least {k} element{'s' if k > 1 else ''})",
        f"def {ep}({xs}):\n    return {xs}[{k}:] + {xs}[:{k}]\n",
        _one_arg(lists),
    )


@family("differences", 2, ("differences", "consecutive_differences", "gaps", "step_sizes"))
def _differences(rng, ep):
    xs = _list_param(rng)
    lists = _int_lists(rng, 5, 0, 20, min_len=1)
    lists.append([4])
    return Task(
        ep,
        (xs,),
        f"returns the list of differences between consecutive elements of the list `{xs}` (each element minus "
        "the one before it)",
        f"def {ep}({xs}):\n    return [b - a for a, b in zip({xs}, {xs}[1:])]\n",
        _one_arg(lists),
    )


# ---------------------------------------------------------------------------------------------------- difficulty 3


@family("flatten_once", 3, ("flatten_once", "flatten", "concat_lists", "join_lists", "merge_sublists"))
def _flatten_once(rng, ep):
    p = rng.choice(("lists", "groups", "nested", "rows"))
    cases = [[_ints(rng, rng.randint(0, 3), 0, 9) for _ in range(rng.randint(1, 4))] for _ in range(5)]
    cases[0] = [_ints(rng, 2, 0, 9), _ints(rng, 1, 0, 9)]
    cases.append([])
    return Task(
        ep,
        (p,),
        f"takes a list of lists `{p}` and returns one list with all their elements, in order",
        f"def {ep}({p}):\n    result = []\n    for group in {p}:\n        result.extend(group)\n    return result\n",
        _one_arg(cases),
    )


@family("merge_sorted", 3, ("merge_sorted", "merge_lists", "combine_sorted", "merge_ascending"))
def _merge_sorted(rng, ep):
    cases = [(sorted(_ints(rng, 2, 0, 9)), sorted(_ints(rng, 2, 0, 9)))]
    cases += [(sorted(_ints(rng, rng.randint(0, 5))), sorted(_ints(rng, rng.randint(0, 5)))) for _ in range(5)]
    return Task(
        ep,
        ("a", "b"),
        "takes two lists `a` and `b`, each sorted in ascending order, and returns one list with all their elements "
        "in ascending order",
        f"def {ep}(a, b):\n    result = []\n    i = j = 0\n    while i < len(a) and j < len(b):\n"
        "        if a[i] <= b[j]:\n            result.append(a[i])\n            i += 1\n        else:\n"
        "            result.append(b[j])\n            j += 1\n    return result + a[i:] + b[j:]\n",
        tuple(cases),
    )


@family("run_length", 3, ("run_length", "rle", "compress_runs", "run_length_code"))
def _run_length(rng, ep):
    s = _string_param(rng)

    def runs(n: int) -> str:
        return "".join(rng.choice("abc") * rng.randint(1, 4) for _ in range(n))

    return Task(
        ep,
        (s,),
        f"returns the run-length encoding of the string `{s}`: each run of one repeated character becomes that "
        "character followed by the length of the run",
        f"def {ep}({s}):\n    result = ''\n    i = 0\n    while i < len({s}):\n        j = i\n"
        f"        while j < len({s}) and {s}[j] == {s}[i]:\n            j += 1\n"
        f"        result += {s}[i] + str(j - i)\n        i = j\n    return result\n",
        _one_arg([runs(2), runs(3), runs(5), "x", "", runs(4)]),
    )


@family("char_frequency", 3, ("char_counts", "letter_frequency", "char_frequency", "count_each_char"))
def _char_frequency(rng, ep):
    s = _string_param(rng)
    return Task(
        ep,
        (s,),
        f"returns a dictionary that maps each character of the string `{s}` to the number of times it appears",
        f"def {ep}({s}):\n    counts = {{}}\n    for c in {s}:\n        counts[c] = counts.get(c, 0) + 1\n"
        "    return counts\n",
        _one_arg([_word(rng)[:4], _word(rng), "", _sentence(rng, 2, 2), "aaa"]),
    )


@family("chunk_list", 3, ("chunk_list", "split_into_chunks", "batches", "group_by_size"))
def _chunk_list(rng, ep):
    xs = _list_param(rng)
    k = rng.randint(2, 4)
    lists = [_ints(rng, k + 1, 0, 9)] + [_ints(rng, rng.randint(0, 9), 0, 9) for _ in range(4)]
    return Task(
        ep,
        (xs,),
        f"splits the list `{xs}` into consecutive chunks of {k} elements and returns the list of chunks (the last "
        f"chunk is shorter when the length of `{xs}` is not a multiple of {k})",
        f"def {ep}({xs}):\n    return [{xs}[i:i + {k}] for i in range(0, len({xs}), {k})]\n",
        _one_arg(lists),
    )


@family("caesar", 3, ("caesar_shift", "rotate_letters", "shift_letters", "caesar_cipher"))
def _caesar(rng, ep):
    s = _string_param(rng)
    k = rng.randint(1, 25)
    return Task(
        ep,
        (s,),
        f"replaces every lower-case letter of the string `{s}` with the letter {k} places after it in the alphabet, "
        "wrapping around from 'z' to 'a', and leaves every other character as it is",
        f"def {ep}({s}):\n    result = ''\n    for c in {s}:\n        if 'a' <= c <= 'z':\n"
        f"            c = chr((ord(c) - ord('a') + {k}) % 26 + ord('a'))\n        result += c\n    return result\n",
        _one_arg(["abc", _word(rng), "xyz", _sentence(rng, 2, 3), ""]),
    )


# ---------------------------------------------------------------------------------------------------- rows


def _call(entry_point: str, args: tuple[Any, ...]) -> str:
    return f"{entry_point}({', '.join(map(repr, args))})"


def _run_reference(task: Task) -> list[Any]:
    namespace: dict[str, Any] = {}
    exec(compile(task.source, f"<{task.entry_point}>", "exec"), namespace)  # our own reference source
    fn = namespace[task.entry_point]
    return [fn(*(_copy(a) for a in args)) for args in task.cases]


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _assert(entry_point: str, args: tuple[Any, ...], expected: Any) -> str:
    call = _call(entry_point, args)
    if isinstance(expected, float):
        return f"assert abs({call} - {expected!r}) < {FLOAT_TOLERANCE}"
    return f"assert {call} == {expected!r}"


def _shown(value: Any) -> str:
    return repr(round(value, 4)) if isinstance(value, float) else repr(value)


def _prompt(task: Task, expected: Any) -> str:
    signature = f"{task.entry_point}({', '.join(task.params)})"
    return (
        f"Write a Python function `{signature}` that {task.description}.\n\n"
        f"Example:\n>>> {_call(task.entry_point, task.cases[0])}\n{_shown(expected)}\n\n"
        "Reply with the complete function in a ```python code block."
    )


def _row(task: Task, fam: Family, seed: int, index: int) -> dict[str, Any] | None:
    cases = tuple({repr(c): c for c in task.cases}.values())  # each input once, the example first
    task = dataclasses.replace(task, cases=cases)
    expected = _run_reference(task)
    if len({repr(e) for e in expected}) < 2:  # a constant answer would pass: draw again
        return None
    return {
        "prompt": [{"role": "user", "content": _prompt(task, expected[0])}],
        "entry_point": task.entry_point,
        "tests": "\n".join(_assert(task.entry_point, a, e) for a, e in zip(task.cases, expected)) + "\n",
        "canonical_solution": task.source,
        "answer": None,
        "task": fam.name,
        "difficulty": fam.difficulty,
        "source_id": f"code_tasks/{seed}/{index}",
    }


def check_args(args: dict[str, Any]) -> list[str]:
    """Every problem with a source's `args` (unknown keys or families, difficulties outside 1-3, an empty
    selection), as one line each; [] when they are fine. Cheap: nothing is generated."""
    problems = [
        f"unknown argument '{k}'{did_you_mean(k, ARGS)}; arguments: {one_of(ARGS)}" for k in args if k not in ARGS
    ]
    families = args.get("families")
    if isinstance(families, str):
        families = [families]
    if families is not None and not (isinstance(families, list) and all(isinstance(f, str) for f in families)):
        problems.append(f"families: must be a list of family names, got {families!r}")
        families = None
    for name in families or []:
        if name not in FAMILIES:
            problems.append(
                f"families: unknown family '{name}'{did_you_mean(name, FAMILIES)}; families: {one_of(FAMILIES)}"
            )
    for key in ("min_difficulty", "max_difficulty"):
        value = args.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3):
            problems.append(f"{key}: must be 1, 2 or 3, got {value!r}")
    if not problems and not select_families(args):
        problems.append(
            f"no family matches families={args.get('families')}, min_difficulty={args.get('min_difficulty')}, "
            f"max_difficulty={args.get('max_difficulty')}"
        )
    return problems


def select_families(args: dict[str, Any]) -> list[Family]:
    """The families that checked `args` select, in registry order."""
    families = args.get("families")
    names = set(FAMILIES) if families is None else {families} if isinstance(families, str) else set(families)
    lo, hi = args.get("min_difficulty") or 1, args.get("max_difficulty") or 3
    return [f for f in FAMILIES.values() if f.name in names and lo <= f.difficulty <= hi]


def code_task_rows(size: int, seed: int, **args: Any) -> list[dict[str, Any]]:
    """`size` generated code tasks for `seed` (see the module docstring for the columns).

    Args:
        size: number of rows.
        seed: any integer; the rows depend only on (seed, size, args).
        families: family names to draw from (default: all of `FAMILIES`).
        max_difficulty / min_difficulty: keep the families of difficulty in this range (1-3).
    Raises:
        DataError: what `check_args` finds, every problem in one message.
    """
    problems = check_args(args)
    if problems:
        raise DataError(f"builtin:code_tasks args: {'; '.join(problems)}")
    chosen = select_families(args)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    order: list[Family] = []
    for i in range(size):
        if i % len(chosen) == 0:  # every family once per block of rows, in a seeded order
            order = random.Random(f"code_tasks/{seed}/order/{i // len(chosen)}").sample(chosen, len(chosen))
        fam = order[i % len(chosen)]
        row = None
        for attempt in range(50):  # a duplicate prompt or a task a constant would pass: draw again
            rng = random.Random(f"code_tasks/{seed}/{i}/{attempt}")
            row = _row(fam.build(rng), fam, seed, i)
            if row is not None and row["prompt"][0]["content"] not in seen:
                break
        if row is None:  # a bug of the family, not of the user's arguments
            raise RuntimeError(f"code_tasks family {fam.name} keeps drawing tasks that a constant answer passes")
        seen.add(row["prompt"][0]["content"])
        rows.append(row)
    return rows
