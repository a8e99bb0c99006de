"""Every bad input of the foundation gives exit code 2 and one line per problem, never a traceback."""

import subprocess
import sys

import pytest

from posttrain.cli import main

GOOD = "name: ok\nmodel: tiny\nstages:\n  - {name: a, type: echo}\n"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("stages:\n  - {name: a, type: nope}\n", "unknown stage type 'nope'; valid stage types are"),
        ("stages:\n  - {name: a, type: echo, value: abc}\n", "stage 'a': value: expected an integer, got 'abc'"),
        ("stages:\n  - {name: a, type: sft}\n", "stage 'a': data: missing required field"),
        ("stages:\n  - name: a\n    type: echo\n   value: 1\n", "YAML syntax error"),
        ("model: ./no/such/dir\nstages:\n  - {name: a, type: echo}\n", "model path './no/such/dir' does not exist"),
    ],
)
def test_bad_recipes_exit_2_with_one_line(capsys, write_recipe, text, expected):
    code, out, err = run_cli(capsys, "validate", write_recipe(text))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in err


def test_missing_recipe_file(capsys):
    code, _, err = run_cli(capsys, "run", "recipes/nope.yaml")
    assert code == 2 and "recipe file 'recipes/nope.yaml' not found" in err


def test_validate_many_reports_all(capsys, write_recipe):
    good = write_recipe(GOOD, "good.yaml")
    bad = write_recipe("stages:\n  - {name: a, type: echo, valu: 1}\n", "bad.yaml")
    code, out, err = run_cli(capsys, "validate", good, bad)
    assert code == 2 and f"ok: {good}" in out and "valu: unknown field (did you mean 'value'?)" in err


def test_empty_dataset_is_a_one_line_error(capsys, write_recipe, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    path = write_recipe(f"model: tiny\nstages:\n  - {{name: s, type: sft, data: 'jsonl:{empty}'}}\n")
    code, _, err = run_cli(capsys, "run", path, "--run-dir", str(tmp_path / "runs"), "--no-progress")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"error: source 'jsonl:{empty}' has no rows; point it at a non-empty file or raise its size"
    )


def test_unwritable_run_dir(capsys, write_recipe, tmp_path):
    (tmp_path / "f").write_text("")
    code, _, err = run_cli(capsys, "run", write_recipe(GOOD), "--run-dir", str(tmp_path / "f" / "runs"))
    assert code == 2 and "is not writable" in err and "--run-dir" in err


def test_plan_and_run_and_report(capsys, write_recipe, tmp_path):
    path = write_recipe(GOOD)
    runs = str(tmp_path / "runs")
    assert run_cli(capsys, "plan", path, "--run-dir", runs)[1].count("not run yet") == 1
    code, _, err = run_cli(capsys, "run", path, "--run-dir", runs)  # the console is stderr; stdout stays clean
    assert code == 0 and "[run] a (echo)" in err and "[done] a" in err and "shards_written=3" in err
    assert err.strip().splitlines()[-3].split() == [
        "a",
        "echo",
        "run",
        err.split("[done] a in ")[1].split("s:")[0] + "s",
        "shards_written=3",
    ]
    code, _, err = run_cli(capsys, "run", path, "--run-dir", runs)
    assert "[cached] a" in err and err.strip().splitlines()[-3].split()[:3] == ["a", "echo", "cached"]
    code, out, _ = run_cli(capsys, "report", f"{runs}/ok")
    assert code == 0 and (tmp_path / "runs/ok/report/summary.md").read_text().count("| a | echo | done |") == 1


def test_subprocess_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - {name: a, type: sft, data: 'jsonl:/nope.jsonl', max_steps: 0}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "posttrain.cli", "validate", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no file or folder matches '/nope.jsonl'" in proc.stderr


def test_stages_lists_types(capsys):
    code, out, _ = run_cli(capsys, "stages")
    assert code == 0 and "type: sft" in out and "lr_scheduler" in out
