"""Runner: manifests, caching, invalidation downstream, --from, --force, resume after a crash."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from posttrain.errors import UserError
from posttrain.recipe.loader import load_recipe
from posttrain.recipe.runner import Runner

TWO = """
name: two
model: tiny
stages:
  - {name: a, type: echo, value: 1}
  - {name: b, type: echo, input: "${stages.a.dataset}"}
"""


def run(path, tmp_path, *overrides, **kw):
    recipe = load_recipe(path, list(overrides), run_dir=str(tmp_path / "runs"))
    lines = []
    Runner(recipe, show_progress=False).run(report=lines.append, **kw)
    return lines


def events(tmp_path):
    log = tmp_path / "runs" / "two" / "events.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_manifest_written_last_with_hashes_and_versions(write_recipe, tmp_path):
    path = write_recipe(TWO)
    run(path, tmp_path)
    manifest = json.loads((tmp_path / "runs/two/b/manifest.json").read_text())
    assert manifest["type"] == "echo" and manifest["metrics"] == {"shards_written": 3}
    assert set(manifest["inputs"]) == {"stage:a"}
    started = time.mktime(time.strptime(manifest["started_at"], "%Y-%m-%dT%H:%M:%S"))
    finished = time.mktime(time.strptime(manifest["finished_at"], "%Y-%m-%dT%H:%M:%S"))
    assert manifest["versions"]["torch"] and 0 <= manifest["wall_time_s"] <= finished - started + 1
    assert manifest["outputs"]["dataset"].endswith("two/b/data")
    assert not (tmp_path / "runs/two/b/.state.json").exists()


def test_second_run_is_cached_and_change_reruns_downstream(write_recipe, tmp_path):
    path = write_recipe(TWO)
    run(path, tmp_path)
    events(tmp_path)
    lines = run(path, tmp_path)
    assert [line.split()[0] for line in lines] == ["[cached]", "[cached]"] and events(tmp_path) == []
    run(path, tmp_path, "stages.a.value=2")
    assert events(tmp_path) == ["a 0", "a 1", "a 2", "b 0", "b 1", "b 2"]
    run(path, tmp_path, "stages.a.value=2", "stages.b.num_shards=1")  # only b changed
    assert events(tmp_path) == ["b 0"]


def test_from_and_force(write_recipe, tmp_path):
    path = write_recipe(TWO)
    run(path, tmp_path)
    events(tmp_path)
    run(path, tmp_path, from_stage="b")
    assert events(tmp_path) == ["b 0", "b 1", "b 2"]
    run(path, tmp_path, force=True)
    assert len(events(tmp_path)) == 6
    with pytest.raises(UserError, match=r"--from bb: no such stage .* \(did you mean 'b'\?\)"):
        run(path, tmp_path, from_stage="bb")


def test_plan_shows_cached_and_what_will_run(write_recipe, tmp_path):
    path = write_recipe(TWO)
    recipe = load_recipe(path, run_dir=str(tmp_path / "runs"))
    assert [i.status for i in Runner(recipe).plan()] == ["run", "run"]
    Runner(recipe, show_progress=False).run(report=lambda _: None)
    assert [i.status for i in Runner(recipe).plan()] == ["cached", "cached"]
    changed = load_recipe(path, ["stages.a.value=5"], run_dir=str(tmp_path / "runs"))
    plan = Runner(changed).plan()
    assert [(i.status, i.reason) for i in plan] == [("run", "config or inputs changed"), ("run", "upstream a re-runs")]


def test_a_new_stage_version_reruns_that_type_and_downstream(write_recipe, tmp_path, monkeypatch):
    from posttrain.stages.base import STAGES

    path = write_recipe(TWO)
    run(path, tmp_path)
    events(tmp_path)
    manifest = json.loads((tmp_path / "runs/two/a/manifest.json").read_text())
    assert manifest["stage_version"] == 1
    monkeypatch.setattr(STAGES.get("echo"), "version", 2, raising=False)
    recipe = load_recipe(path, run_dir=str(tmp_path / "runs"))
    plan = Runner(recipe).plan()
    assert [(i.status, i.reason) for i in plan] == [
        ("run", "posttrain's echo stage changed what it writes since this ran (version 1 -> 2)"),
        ("run", "upstream a re-runs"),
    ]
    run(path, tmp_path)
    assert events(tmp_path) == ["a 0", "a 1", "a 2", "b 0", "b 1", "b 2"]
    assert json.loads((tmp_path / "runs/two/a/manifest.json").read_text())["stage_version"] == 2
    assert [line.split()[0] for line in run(path, tmp_path)] == ["[cached]", "[cached]"]


def test_crash_mid_stage_resumes_without_redoing_finished_work(write_recipe, tmp_path):
    path = write_recipe(TWO)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(path, tmp_path, "stages.b.fail_after=2")
    assert not (tmp_path / "runs/two/b/manifest.json").exists()
    assert events(tmp_path) == ["a 0", "a 1", "a 2", "b 0", "b 1"]
    # The interrupted stage's config includes fail_after; rerunning with the same config resumes it.
    recipe = load_recipe(path, ["stages.b.fail_after=2"], run_dir=str(tmp_path / "runs"))
    assert [i.status for i in Runner(recipe).plan()] == ["cached", "resume"]
    run(path, tmp_path, "stages.b.fail_after=9")  # a different config: partial work is discarded
    assert events(tmp_path) == ["b 0", "b 1", "b 2"]


def test_resume_keeps_partial_shards(write_recipe, tmp_path):
    path = write_recipe(TWO)
    with pytest.raises(RuntimeError):
        run(path, tmp_path, "stages.b.fail_after=2")
    events(tmp_path)
    with pytest.raises(RuntimeError):  # same config, resumed: only shard 2 is new, and it fails again at once
        run(path, tmp_path, "stages.b.fail_after=2")
    assert events(tmp_path) == ["b 2"]


def test_external_file_change_invalidates(write_recipe, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "hi"}\n')
    text = f"stages:\n  - {{name: a, type: echo, input: '{data}'}}\n"
    path = write_recipe(text)
    recipe = load_recipe(path, run_dir=str(tmp_path / "runs"))
    Runner(recipe, show_progress=False).run(report=lambda _: None)
    assert Runner(recipe).plan()[0].status == "cached"
    data.write_text('{"prompt": "changed"}\n')
    assert Runner(recipe).plan()[0].status == "run"


def test_unwritable_run_dir(write_recipe, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    recipe = load_recipe(write_recipe(TWO), run_dir=str(blocker / "runs"))
    with pytest.raises(UserError, match="is not writable .*pass --run-dir"):
        Runner(recipe).run(report=lambda _: None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_run_dir(write_recipe, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(UserError, match="not writable"):
        Runner(load_recipe(write_recipe(TWO), run_dir=str(ro))).run(report=lambda _: None)


@pytest.mark.parametrize(
    "spelling",
    ["parquet:shards/*.parquet", "shards", "parquet:shards", "jsonl:rows", "rows", "hf-disk:saved"],
)
def test_every_spelling_of_a_source_is_hashed(write_recipe, tmp_path, monkeypatch, spelling):
    import datasets

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    table = datasets.Dataset.from_list([{"prompt": "What is 1+1?", "answer": "2"}])
    table.to_parquet("shards/part-0.parquet")
    table.save_to_disk("saved")
    Path("rows").write_text('{"prompt": "What is 1+1?", "answer": "2"}\n')  # a file without a suffix
    text = f"stages:\n  - {{name: e, type: eval, data: '{spelling}', rewards: [math]}}\n"
    recipe = load_recipe(write_recipe(text), run_dir=str(tmp_path / "runs"))
    spec = recipe.stage("e")
    before, inputs = Runner(recipe)._key(spec, {})
    assert any(k.startswith("file:") for k in inputs), inputs
    changed = datasets.Dataset.from_list([{"prompt": "What is 2+2?", "answer": "4"}])
    changed.to_parquet("shards/part-0.parquet")
    changed.save_to_disk("saved2")
    shutil.rmtree("saved")
    Path("saved2").rename("saved")
    Path("rows").write_text('{"prompt": "What is 2+2?", "answer": "4"}\n')
    assert Runner(recipe)._key(spec, {})[0] != before


def test_an_excluded_eval_file_is_part_of_the_key(write_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("eval.jsonl").write_text('{"prompt": "What is 1+1?", "answer": "2"}\n')
    text = (
        "stages:\n  - {name: e, type: eval, rewards: [math], data: {source: 'reasoning_gym:chain_sum', size: 4, "
        "exclude: ['jsonl:eval.jsonl']}}\n"
    )
    recipe = load_recipe(write_recipe(text), run_dir=str(tmp_path / "runs"))
    before, inputs = Runner(recipe)._key(recipe.stage("e"), {})
    assert list(inputs) == ["file:eval.jsonl"]
    Path("eval.jsonl").write_text('{"prompt": "What is 2+2?", "answer": "4"}\n')
    assert Runner(recipe)._key(recipe.stage("e"), {})[0] != before


def test_a_builtin_source_keys_on_the_files_that_make_its_rows(write_recipe, tmp_path, monkeypatch):
    """The code-task generator and the chat prompts ship with posttrain: an upgrade that changes their rows
    re-runs the stages that read them, and the key does not depend on where posttrain is installed."""
    import posttrain.recipe.runner as runner_module

    text = (
        "stages:\n"
        "  - {name: c, type: eval, rewards: [{name: code}], data: {source: 'builtin:code_tasks', size: 4}}\n"
        "  - {name: p, type: eval, rewards: [math], data: {source: 'builtin:chat_prompts', size: 4}}\n"
    )
    recipe = load_recipe(write_recipe(text), run_dir=str(tmp_path / "runs"))
    keys = {}
    for name, shipped in (("c", "data_gen/code_tasks.py"), ("p", "data_gen/builtin/chat_prompts.jsonl")):
        keys[name], inputs = Runner(recipe)._key(recipe.stage(name), {})
        assert list(inputs) == [f"posttrain:{shipped}"]
    # posttrain elsewhere (a copy of it with one generator line changed): same names, the changed file's key moves
    copy = tmp_path / "copy"
    for rel in ("data_gen/code_tasks.py", "data_gen/builtin/chat_prompts.jsonl"):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runner_module.PACKAGE_ROOT / rel, copy / rel)
    monkeypatch.setattr(runner_module, "PACKAGE_ROOT", copy)
    import data_gen.sources as sources_module

    monkeypatch.setattr(sources_module, "__file__", str(copy / "data_gen" / "sources.py"))
    assert Runner(recipe)._key(recipe.stage("c"), {})[0] == keys["c"]
    with (copy / "data_gen/code_tasks.py").open("a") as f:
        f.write("\n# changed\n")
    assert Runner(recipe)._key(recipe.stage("c"), {})[0] != keys["c"]
    assert Runner(recipe)._key(recipe.stage("p"), {})[0] == keys["p"]
