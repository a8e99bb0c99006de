"""`rewards list` and `rewards score` through argparse, as posttrain's CLI wires them (`rewards check` has its own
tests, in test_rewards_check.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from posttrain.errors import ConfigError, DataError
from rewards.cli import add_subcommands, parse_params


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posttrain")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_list_shows_every_reward_with_kind_settings_and_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert run(["rewards", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("math", "code", "think_format", "length", "repetition", "language", "reward_model", "llm_judge",
                 "embedding_match", "reasoning_gym"):  # fmt: skip
        assert f" {name} " in out
    assert "timeout_s=5.0" in out and "tests or test" in out and "model (required)" in out and " model " in out


def test_score_math_writes_scores_and_prints_a_summary(tmp_path, capsys):
    data = write_jsonl(
        tmp_path / "answers.jsonl",
        [
            {"completion": "\\boxed{\\frac12}", "answer": "0.5"},
            {"completion": [{"role": "assistant", "content": "The answer is 3."}], "answer": "4"},
            {"completion": "Paris", "answer": "Paris"},
        ],
    )
    assert run(["rewards", "score", "math", "--data", data]) == 0
    out = capsys.readouterr().out
    assert "math: 3 rows scored" in out and "not applicable (None) 1" in out and "values: 0 x 1, 1 x 1" in out
    scored = [json.loads(line) for line in (tmp_path / "answers.scores.jsonl").read_text().splitlines()]
    assert [r["score"] for r in scored] == [1.0, 0.0, None]
    assert scored[0]["answer"] == "0.5"


def test_score_code_with_params_and_out(tmp_path, capsys):
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    rows = [
        {"completion": "```python\ndef add(a, b):\n    return a + b\n```", "tests": tests},
        {"completion": "```python\ndef add(a, b):\n    return a + b + (a == 2)\n```", "tests": tests},
    ]
    out_file = tmp_path / "scored.jsonl"
    data = write_jsonl(tmp_path / "code.jsonl", rows)
    assert run(["rewards", "score", "code", "--data", data, "--param", "mode=fraction", "--out", str(out_file)]) == 0
    assert [json.loads(line)["score"] for line in out_file.read_text().splitlines()] == [1.0, 0.5]


def test_score_reports_user_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        run(["rewards", "score", "math", "--data", str(tmp_path / "missing.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "1", "answer": "1"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        run(["rewards", "score", "math", "--data", str(bad)])
    data = write_jsonl(tmp_path / "x.jsonl", [{"completion": "1"}])
    with pytest.raises(
        ConfigError, match=r"rewards score math: rewards\[0\] \(math\): needs the dataset column 'answer'"
    ):
        run(["rewards", "score", "math", "--data", data])
    with pytest.raises(ConfigError, match="did you mean 'math'"):
        run(["rewards", "score", "mat", "--data", data])
    with pytest.raises(ConfigError, match="timeout_s: expected a number"):
        run(["rewards", "score", "code", "--data", data, "--param", "timeout_s=soon"])
    with pytest.raises(DataError, match="no 'response' field"):
        run(["rewards", "score", "math", "--data", data, "--completion-column", "response"])
    data = write_jsonl(tmp_path / "y.jsonl", [{"completion": "1", "answer": "1"}, {"completion": "2"}])
    with pytest.raises(DataError, match=r"y.jsonl:2: no 'answer' field, which reward 'math' needs"):
        run(["rewards", "score", "math", "--data", data])
    data = write_jsonl(tmp_path / "z.jsonl", [{"completion": "1", "answer": "1"}, {"answer": "2"}])
    with pytest.raises(DataError, match=r"z.jsonl:2: no 'completion' field to score"):
        run(["rewards", "score", "math", "--data", data])


def test_parse_params_reads_yaml_values():
    assert parse_params(["timeout_s=5", "mode=fraction", "answer_tags=[<a>, </a>]", "model="]) == {
        "timeout_s": 5,
        "mode": "fraction",
        "answer_tags": ["<a>", "</a>"],
        "model": None,
    }
    with pytest.raises(ConfigError, match="write it as KEY=VALUE"):
        parse_params(["timeout_s"])
