"""`posttrain rewards check`: agreement, confusion table, ROC AUC and best threshold against labels, on literal
rows."""

from __future__ import annotations

import argparse
import json

import pytest

from posttrain.errors import ConfigError, DataError
from rewards.cli import add_subcommands, best_threshold, roc_auc

HERE = __name__  # the dotted path of `listed_score` below, however pytest imported this module


def listed_score(completions: list, score: list, **kwargs) -> list[float | None]:
    """A reward that returns the `score` column: any continuous scores a test wants."""
    return [None if s is None else float(s) for s in score]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posttrain")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


MATH_ROWS = [
    {"completion": "\\boxed{4}", "answer": "4", "correct": True},  # 1, agrees
    {"completion": "The answer is 5.", "answer": "4", "correct": False},  # 0, agrees
    {"completion": "It is 4", "answer": "4", "correct": 1},  # 1, agrees
    {"completion": "x = 3", "answer": "3", "correct": False},  # 1, disagrees (a false positive)
    {"completion": "\\boxed{7}", "answer": "8", "correct": "true"},  # 0, disagrees (a false negative)
    {"completion": "Paris", "answer": "Paris", "correct": 0},  # None: counted apart
]


def test_check_math_prints_agreement_and_confusion_table(tmp_path, capsys):
    data = write_jsonl(tmp_path / "labelled.jsonl", MATH_ROWS)
    assert run(["rewards", "check", "math", "--data", data, "--label", "correct"]) == 0
    out = capsys.readouterr().out
    assert f"math on {data}: 6 rows, label 'correct' (3 true, 3 false)" in out
    assert "agreement at threshold 0.5: 0.600 (3 / 5)" in out
    lines = out.splitlines()
    table = {line.split()[1]: line.split()[2:] for line in lines if line.strip().startswith("label ")}
    assert table == {"true": ["2", "1", "0"], "false": ["1", "1", "1"]}  # score >= 0.5, score < 0.5, None
    assert "ROC AUC" not in out  # scores are all 0 and 1: a rule verdict, no ranking to measure


def test_check_with_settings_and_completion_column(tmp_path, capsys):
    rows = [
        {"response": "12 + 7 = 19", "answer": "19", "ok": True},
        {"response": "\\boxed{19}", "answer": "19", "ok": 1},
    ]
    data = write_jsonl(tmp_path / "x.jsonl", rows)
    argv = ["rewards", "check", "math", "--data", data, "--label", "ok", "--completion-column", "response"]
    assert run([*argv, "--param", "last_number_fallback=false"]) == 0
    assert "agreement at threshold 0.5: 0.500 (1 / 2)" in capsys.readouterr().out


def test_check_continuous_scores_gives_the_exact_auc_and_best_threshold(tmp_path, capsys):
    # true rows score 0.9, 0.6, 0.4; false rows 0.6, 0.2, 0.1. Of the 9 (true, false) pairs the true row wins 7,
    # ties once (0.6 vs 0.6: half) and loses once (0.4 vs 0.6): AUC = 7.5 / 9.
    scores = [0.9, 0.6, 0.4, 0.6, 0.2, 0.1, None]
    labels = [True, True, True, False, False, False, True]
    rows = [{"completion": "x", "score": s, "correct": lab} for s, lab in zip(scores, labels)]
    data = write_jsonl(tmp_path / "scores.jsonl", rows)
    assert run(["rewards", "check", f"{HERE}:listed_score", "--data", data, "--label", "correct"]) == 0
    out = capsys.readouterr().out
    assert "ROC AUC: 0.8333" in out
    # score >= 0.4 calls 0.9, 0.6, 0.4, 0.6 true: 5 of 6 agree (only the false 0.6 does not); no threshold does better
    assert "best threshold: 0.4 (score >= it is true): agreement 0.833 (5 / 6)" in out
    assert "agreement at threshold 0.5: 0.667 (4 / 6)" in out
    assert "mean score, label true: 0.633333 (3 rows)" in out and "mean score, label false: 0.3 (3 rows)" in out
    assert roc_auc([s for s in scores if s is not None], labels[:6]) == pytest.approx(7.5 / 9)


def test_roc_auc_and_best_threshold_edge_cases():
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [True, False, True]) == 0.5
    assert roc_auc([0.3, 0.4], [True, True]) is None  # one class only
    assert best_threshold([0.1, 0.9], [False, True]) == (0.9, 2)
    assert best_threshold([0.9, 0.1], [False, False]) == (float("inf"), 2)  # call everything false
    assert best_threshold([0.2, 0.2], [True, True]) == (0.2, 2)


def test_check_reports_user_errors_naming_file_line_and_field(tmp_path):
    data = write_jsonl(
        tmp_path / "a.jsonl", [{"completion": "1", "answer": "1", "y": True}, {"completion": "2", "answer": "2"}]
    )
    with pytest.raises(DataError, match=r"a.jsonl:2: no 'y' field \(the --label\)"):
        run(["rewards", "check", "math", "--data", data, "--label", "y"])
    data = write_jsonl(tmp_path / "b.jsonl", [{"completion": "1", "answer": "1", "y": "maybe"}])
    with pytest.raises(DataError, match=r"b.jsonl:1: label 'y' must be true/false or 1/0, got \"maybe\""):
        run(["rewards", "check", "math", "--data", data, "--label", "y"])
    data = write_jsonl(tmp_path / "c.jsonl", [{"completion": "1", "answer": "1", "y": 1}, {"completion": "2", "y": 0}])
    with pytest.raises(DataError, match=r"c.jsonl:2: no 'answer' field, which reward 'math' needs"):
        run(["rewards", "check", "math", "--data", data, "--label", "y"])
    with pytest.raises(DataError, match="no such file"):
        run(["rewards", "check", "math", "--data", str(tmp_path / "none.jsonl"), "--label", "y"])
    data = write_jsonl(tmp_path / "d.jsonl", [{"completion": "1", "y": 1}])
    with pytest.raises(
        ConfigError, match=r"rewards check math: rewards\[0\] \(math\): needs the dataset column 'answer'"
    ):
        run(["rewards", "check", "math", "--data", data, "--label", "y"])
    with pytest.raises(ConfigError, match="last_number_fallback: expected true or false"):
        run(["rewards", "check", "math", "--data", data, "--label", "y", "--param", "last_number_fallback=maybe"])


def test_check_exit_code_2_through_posttrain_main(tmp_path, capsys):
    from posttrain.cli import main

    data = write_jsonl(tmp_path / "e.jsonl", [{"completion": "1", "answer": "1"}])
    assert main(["rewards", "check", "math", "--data", data, "--label", "correct"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {data}:1: no 'correct' field (the --label)"]
