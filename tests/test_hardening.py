"""State on disk and bad input, as a hostile or unlucky user meets them: outputs changed behind the cache's back,
torn logs and checkpoints, two runs in one folder, a full disk, and malformed recipes, overrides and data files.
Each must end in a correct resume or one line naming the file, line or field and the fix, never a traceback."""

from __future__ import annotations

import errno
import gzip
import json
import time
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.errors import ConfigError, DataError, machine_error_line
from posttrain.files import MetricsLogger, read_jsonl, truncate_jsonl
from posttrain.recipe.loader import load_recipe
from posttrain.recipe.runner import Runner, run_lock

TWO = """
name: two
stages:
  - {name: a, type: echo, value: 1}
  - {name: b, type: echo, input: "${stages.a.dataset}"}
"""


def _run(path: str, tmp_path: Path) -> list[dict]:
    return Runner(load_recipe(path, run_dir=str(tmp_path / "runs")), show_progress=False).run(report=lambda _: None)


def _plan(path: str, tmp_path: Path) -> dict[str, tuple[str, str]]:
    recipe = load_recipe(path, run_dir=str(tmp_path / "runs"))
    return {item.stage.name: (item.status, item.reason) for item in Runner(recipe).plan()}


# --- outputs checked against the manifest ---------------------------------------------------------------------


def test_a_cached_stage_whose_outputs_were_deleted_or_changed_runs_again(write_recipe, tmp_path):
    path = write_recipe(TWO)
    _run(path, tmp_path)
    assert _plan(path, tmp_path)["a"][0] == "cached"
    (tmp_path / "runs/two/a/data/shard-1").unlink()
    status, reason = _plan(path, tmp_path)["a"]
    assert status == "run" and "dataset changed" in reason
    assert _plan(path, tmp_path)["b"] == ("run", "upstream a re-runs")
    _run(path, tmp_path)
    assert [status for status, _ in _plan(path, tmp_path).values()] == ["cached", "cached"]
    (tmp_path / "runs/two/a/checkpoints").mkdir()  # resume state is not a result: deleting it re-runs nothing
    time.sleep(0.01)
    (tmp_path / "runs/two/b/data/shard-0").write_text("edited by hand")
    assert _plan(path, tmp_path)["b"][0] == "run"


@pytest.mark.parametrize("text", ["[1]", "5", '{"key": "x"}', '{"stage": "a"', ""])
def test_a_manifest_that_is_not_one_is_not_trusted(write_recipe, tmp_path, text):
    path = write_recipe(TWO)
    _run(path, tmp_path)
    (tmp_path / "runs/two/a/manifest.json").write_text(text)
    assert _plan(path, tmp_path)["a"][0] == "run"
    _run(path, tmp_path)  # and the run goes through, re-running a
    assert json.loads((tmp_path / "runs/two/a/manifest.json").read_text())["stage"] == "a"


# --- torn files -----------------------------------------------------------------------------------------------


def test_a_torn_log_line_is_cut_before_appending_and_skipped_when_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_jsonl(path) == [{"step": 1, "loss": 2.0}]
    MetricsLogger(path).log(2, loss=1.5)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2] and path.read_text().count("\n") == 2
    path.write_text('{"step": 1}\n{"step": 5}\n{"st')
    truncate_jsonl(path, 3)
    assert path.read_text() == '{"step": 1}\n'


def _checkpoint(root: Path, step: int, tiny_path: str) -> Path:
    """A real checkpoint folder: the tiny model's weights, a torch-saved optimizer state and trainer_state.json."""
    import torch
    from transformers import AutoModelForCausalLM

    path = root / f"checkpoint-{step}"
    AutoModelForCausalLM.from_pretrained(tiny_path).save_pretrained(path)
    torch.save({"state": {0: {"exp_avg": torch.randn(256, 64)}}}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


@pytest.mark.parametrize("damage", ["weights", "optimizer", "state"])
def test_a_checkpoint_that_does_not_load_falls_back_to_the_one_before(tmp_path, tiny_path, damage):
    from posttrain.training import last_checkpoint

    _checkpoint(tmp_path, 2, tiny_path)
    newest = _checkpoint(tmp_path, 4, tiny_path)
    target = {"weights": "model.safetensors", "optimizer": "optimizer.pt", "state": "trainer_state.json"}[damage]
    data = (newest / target).read_bytes()
    (newest / target).write_bytes(data[: len(data) // 2])  # a save cut off by a kill or a full disk
    if damage == "state":
        assert last_checkpoint(tmp_path).name == "checkpoint-2"
    else:
        with pytest.warns(UserWarning, match=f"checkpoint-4 cannot be resumed from .*{target}"):
            assert last_checkpoint(tmp_path).name == "checkpoint-2"
    assert not newest.exists()


def test_whole_run_loss_after_a_resume(tmp_path):
    from posttrain.training import whole_run_loss

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in (1, 2, 3, 4)))
    assert whole_run_loss(path, 3.5, resumed_from_step=2) == 2.5  # steps 1-4, not only 3-4
    assert whole_run_loss(path, 3.5, resumed_from_step=0) == 3.5


# --- two runs, a full disk ------------------------------------------------------------------------------------


def test_a_second_run_in_the_same_folder_exits_naming_the_live_one(write_recipe, tmp_path, capsys):
    path = write_recipe(TWO)
    root = tmp_path / "runs/two"
    root.mkdir(parents=True)
    with run_lock(root):
        assert main(["run", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{root} is in use by another `posttrain run` (pid " in err and "--run-dir" in err
    assert main(["run", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 0  # released


def test_a_full_disk_is_one_line_naming_the_path_and_the_space(write_recipe, tmp_path, capsys, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device")
    full.filename = str(tmp_path / "runs/two/a/data/shard-0")

    def run(self, *args, **kwargs):
        raise full

    monkeypatch.setattr(Runner, "run", run)
    assert main(["run", write_recipe(TWO), "--run-dir", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no space left on the device while writing {full.filename}")
    assert "MiB free there" in lines[0] and "run the same command again" in lines[0]
    wrapped = RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"
    )
    assert machine_error_line(wrapped, tmp_path).startswith(f"no space left on the device while writing {tmp_path}")
    assert machine_error_line(ValueError("a bug")) is None


# --- recipes --------------------------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_fast(write_recipe):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write_recipe("\n".join(lines) + "\nstages: [{name: a, type: echo}]\n")
    start = time.time()
    with pytest.raises(ConfigError, match=r"values once its YAML aliases .* are expanded .* alias bomb"):
        load_recipe(path)
    assert time.time() - start < 2


def test_duplicate_keys_name_both_lines(write_recipe):
    path = write_recipe("name: d\nstages:\n  - name: a\n    type: echo\n    value: 1\n    value: 500000\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert e.value.problems == [
        f"{path}:6: key 'value' appears twice in one mapping (lines 5 and 6); the second would silently replace "
        "the first: keep one"
    ]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("stages: [{name: a, type: echo, value: 1}]\nseed: 99999999999999999999", "seed: must be in [0, 4294967295]"),
        ("stages: [{name: a.b, type: echo}]", "name: missing or invalid ('a.b'); use letters, digits, _ and -"),
        ("stages: [{name: ../x, type: echo}]", "name: missing or invalid ('../x')"),
        (f"stages: [{{name: {'s' * 300}, type: echo}}]", "name: missing or invalid ('sssssssss"),
        ("stages:\n" + "  " * 0 + "- " + "[" * 200 + "]" * 200, "nested more than 64 levels deep"),
        ("stages: [{name: r, type: grpo, data: 'reasoning_gym:chain_sum', rewards: [math], learning_rate: .nan}]",
         "learning_rate: expected a finite number, got nan"),
        ("stages: [{name: r, type: grpo, data: 'reasoning_gym:chain_sum', rewards: [math], beta: .inf}]",
         "beta: expected a finite number, got inf"),
    ],
)  # fmt: skip
def test_malformed_recipes_are_one_line_errors(write_recipe, capsys, body, expected):
    assert main(["validate", write_recipe(body)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_recipe_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: caf\xe9\nstages: []\n")
    assert main(["validate", str(path)]) == 2
    assert f"{path}: not UTF-8 text (byte 9 is 0xe9); save it as UTF-8" in capsys.readouterr().err


def test_validate_takes_overrides_like_run(write_recipe, capsys):
    path = write_recipe("stages: [{name: a, type: echo, value: 1}]\n")
    assert main(["validate", path, "stages.a.num_shards=0"]) == 2
    assert "stage 'a': num_shards: must be positive, got 0" in capsys.readouterr().err
    assert main(["validate", path, "stages.a.value=3"]) == 0
    assert main(["validate", path, "stages.a.value=["]) == 2
    assert "override 'stages.a.value=[': the value is not valid YAML" in capsys.readouterr().err


# --- data files -----------------------------------------------------------------------------------------------


def _load(source: str):
    from data_gen.sources import load_source

    return load_source(source)


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"messages": ["hi", "there"]}\n', ":1: 'messages'[0] is str, not a {role, content} message"),
        ('{"messages": [{"role": "user"}]}\n', ":1: 'messages'[0] needs a string 'role' and a string 'content'"),
        ('{"prompt": "a", "answer": 1}\n{"prompt": "b", "answer": "two"}\n', "column 'answer' holds values of different types (int, str)"),
        (b'{"prompt": "caf\xe9"}\n', ":1: not UTF-8 text"),
    ],
)  # fmt: skip
def test_malformed_jsonl_rows_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match="") as e:
        _load(f"jsonl:{path}")
    assert expected in str(e.value) and str(path) in str(e.value)


def test_a_truncated_gzip_is_one_line(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    data = gzip.compress(b"".join(b'{"prompt": "row %d"}\n' % i for i in range(2000)))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"rows.jsonl.gz: the gzip stream is cut short or damaged after line \d+"):
        _load(str(path))


@pytest.mark.parametrize("content", [b"", b"PAR1 this is not parquet at all"])
def test_empty_or_garbage_parquet_is_one_line(tmp_path, content):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(content)
    with pytest.raises(DataError, match=r"part-0.parquet: not a readable Parquet file"):
        _load(str(folder))


def test_an_unwritable_cache_is_one_line(write_recipe, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("POSTTRAIN_CACHE", str(blocker / "cache"))
    path = write_recipe("stages: [{name: s, type: sft, model: tiny, data: 'reasoning_gym:chain_sum', max_steps: 1}]")
    assert main(["run", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("[failed] s: its output is in") and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: ") and str(blocker) in err[-1] and "POSTTRAIN_CACHE" in err[-1], err
