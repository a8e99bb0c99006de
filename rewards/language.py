"""The `language` reward: a penalty for language mixing, the share of a response's letters outside the target script.

Each letter is assigned to its Unicode script by the first word of its character name (LATIN, CYRILLIC, CJK,
HIRAGANA, HANGUL, ...); digits, punctuation, symbols and spaces are not letters and do not count. By default code
blocks, inline code and LaTeX math are removed first, since they are written in Latin letters whatever the language.
The reward is -max_penalty * share, in [-max_penalty, 0]; a response with no letters has no penalty. `language`
takes an ISO 639-1 code (en, zh, ja, ru, ...) or a script name (latin, cyrillic, ...).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from posttrain.errors import did_you_mean
from rewards.base import completion_texts, reward

_LATIN = ("LATIN",)
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    **{code: _LATIN for code in ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs",
                                 "ro", "hu", "tr", "id", "vi", "ms", "sw", "ca", "hr", "sk", "sl")},
    "zh": ("CJK",),
    "ja": ("CJK", "HIRAGANA", "KATAKANA"),
    "ko": ("HANGUL", "CJK"),
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "bg": ("CYRILLIC",), "sr": ("CYRILLIC",),
    "ar": ("ARABIC",), "fa": ("ARABIC",), "he": ("HEBREW",), "el": ("GREEK",),
    "hi": ("DEVANAGARI",), "mr": ("DEVANAGARI",), "bn": ("BENGALI",), "th": ("THAI",), "ta": ("TAMIL",),
}  # fmt: skip
SCRIPTS = sorted({s for scripts in LANGUAGE_SCRIPTS.values() for s in scripts} | {"ARMENIAN", "GEORGIAN"})

_CODE_AND_MATH = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)


def target_scripts(language: str) -> tuple[str, ...] | None:
    """The scripts of a language code or script name; None when unknown."""
    if language.lower() in LANGUAGE_SCRIPTS:
        return LANGUAGE_SCRIPTS[language.lower()]
    return (language.upper(),) if language.upper() in SCRIPTS else None


@lru_cache(maxsize=65536)
def letter_script(ch: str) -> str | None:
    """The script of a letter (first word of its Unicode name), None for anything that is not a letter."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    if name.startswith(("FULLWIDTH LATIN", "HALFWIDTH KATAKANA")):
        return name.split()[1]
    return name.split(" ", 1)[0] or None


def foreign_share(text: str, scripts: tuple[str, ...], ignore_code_and_math: bool = True) -> float:
    """Share of the letters of `text` outside `scripts`, in [0, 1]; 0.0 when it has no letters."""
    if ignore_code_and_math:
        text = _CODE_AND_MATH.sub(" ", text)
    found = [s for s in map(letter_script, text) if s is not None]
    if not found:
        return 0.0
    return sum(s not in scripts for s in found) / len(found)


def _validate(params: dict[str, Any]) -> list[str]:
    if target_scripts(params["language"]) is None:
        known = list(LANGUAGE_SCRIPTS) + [s.lower() for s in SCRIPTS]
        return [
            f"language: unknown language or script {params['language']!r}{did_you_mean(params['language'], known)}; "
            f"use an ISO 639-1 code such as {', '.join(sorted(LANGUAGE_SCRIPTS)[:12])}, ... or a script name such "
            f"as {', '.join(s.lower() for s in SCRIPTS[:6])}, ..."
        ]
    return []


@reward("language", kind="rule", validate=_validate)
def language_reward(
    completions: list,
    *,
    language: str = "en",
    max_penalty: float = 1.0,
    ignore_code_and_math: bool = True,
    **kwargs,
) -> list[float | None]:
    """-max_penalty * share of letters outside the target language's script; 0.0 for a single-script response.

    Args:
        completions: responses, strings or chat message lists.
        language: ISO 639-1 code ('en', 'zh', 'ja', ...) or script name ('latin', 'cyrillic', ...).
        max_penalty: the penalty when no letter is in the target script.
        ignore_code_and_math: leave out fenced and inline code and LaTeX math before counting.
    """
    scripts = target_scripts(language)
    if scripts is None:  # `posttrain validate` says so first; a direct call gets the same message
        raise ValueError(f"language: unknown language or script {language!r}; use e.g. en, zh, ru, or latin")
    return [0.0 - max_penalty * foreign_share(t, scripts, ignore_code_and_math) for t in completion_texts(completions)]
