"""Checks the built-in non-reasoning chat prompts (writing / role-play / simple QA) shipped with data_gen."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "data_gen/builtin/chat_prompts.jsonl"
CATEGORIES = ("writing", "roleplay", "qa")
BASE_KEYS = {"id", "category", "topic", "prompt"}
EXTRA_KEYS = {"writing": set(), "roleplay": {"system"}, "qa": {"answer"}}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    out = []
    with PATH.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            assert line.strip(), f"{PATH}:{n}: blank line"
            row = json.loads(line)
            assert isinstance(row, dict), f"{PATH}:{n}: not a JSON object"
            out.append(row)
    return out


def test_enough_rows(rows):
    assert len(rows) >= 200


def test_ids_unique_and_consecutive(rows):
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert ids == [f"chat-{i:04d}" for i in range(1, len(rows) + 1)]


def test_keys_match_category(rows):
    for r in rows:
        assert r.get("category") in CATEGORIES, r.get("id")
        assert set(r) == BASE_KEYS | EXTRA_KEYS[r["category"]], r["id"]
        for key in set(r) - {"id", "category"}:
            assert isinstance(r[key], str) and r[key].strip(), (r["id"], key)


def test_category_shares(rows):
    counts = Counter(r["category"] for r in rows)
    for cat in CATEGORIES:
        assert counts[cat] / len(rows) >= 0.20, (cat, counts)


def test_prompt_length(rows):
    for r in rows:
        assert r["prompt"].strip() and len(r["prompt"]) <= 1200, r["id"]


def test_no_shared_six_word_openings(rows):
    seen: dict[tuple[str, ...], str] = {}
    for r in rows:
        key = tuple(r["prompt"].lower().split()[:6])
        assert key not in seen, f"{r['id']} and {seen[key]} start with the same 6 words: {' '.join(key)!r}"
        seen[key] = r["id"]
