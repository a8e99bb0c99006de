"""Sharded generation past one process: `executor: {kind: ray}` on a real local Ray cluster (2 CPUs), and every rank
taking its share of the shards under `posttrain run --num-processes 2`. The output of 2 Ray workers equals that of 1
worker and of the local executor (same rows, same order); a worker killed mid-shard costs only that shard, which is
redone and counted in the manifest; `kind: ray` without Ray installed is a validate error naming the install."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from posttrain.cli import main
from posttrain.recipe.loader import load_recipe
from posttrain.recipe.runner import Runner

RECIPE = """
name: rs
model: tiny
stages:
  - name: distill
    type: rejection_sampling
    data: {{source: "reasoning_gym:chain_sum", size: 8, seed: 1}}
    rewards: [{{name: length, max_length: 60, cache_length: 20, unit: chars}}]
    pass_threshold: -0.5
    sampling: {{n: 2, temperature: 1.0, max_tokens: 8}}
    generator: {{backend: transformers}}
    filters: {{drop_truncated: false, max_repetition: null, language: null, format: [], overthinking_ratio: null}}
    pairs: {{rejected: [incorrect]}}
    shard_size: 2
    executor: {executor}
"""

EVAL = """
name: ev
model: tiny
stages:
  - name: eval
    type: eval
    data: {{source: "reasoning_gym:chain_sum", size: 6, seed: 2}}
    rewards: [{{name: math}}, {{name: repetition}}]
    sampling: {{n: 2, temperature: 1.0, max_tokens: 8}}
    generator: {{backend: transformers}}
    shard_size: {shard_size}
    executor: {executor}
"""

LOCAL = "{kind: local}"


def ray_executor(workers: int, retries: int = 2) -> str:
    return f"{{kind: ray, num_workers: {workers}, max_retries: {retries}}}"


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (the pools join it instead of starting their own)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def run(write_recipe, text: str, run_dir: Path, name: str) -> dict:
    path = write_recipe(text, name=f"{name}.yaml")
    Runner(load_recipe(path, run_dir=str(run_dir)), show_progress=False).run(report=lambda *a, **k: None)
    stage = next(p.parent for p in run_dir.glob("*/*/manifest.json"))
    return json.loads((stage / "manifest.json").read_text())


def outputs(stage_dir: Path) -> dict[str, list[dict]]:
    """Every row of every output, in shard order then row order (what a reader of the folder sees)."""
    out = {}
    for folder in ("dataset", "rejected", "pairs"):
        out[folder] = [
            r for part in sorted((stage_dir / folder).glob("part-*.parquet")) for r in pq.read_table(part).to_pylist()
        ]
    return out


def test_two_ray_workers_write_what_one_worker_and_the_local_executor_write(
    write_recipe, tmp_path, tiny_path, cluster
):
    results = {}
    for name, executor in [("local", LOCAL), ("ray1", ray_executor(1)), ("ray2", ray_executor(2))]:
        manifest = run(write_recipe, RECIPE.format(executor=executor), tmp_path / name, name)
        results[name] = outputs(tmp_path / name / "rs" / "distill")
        assert manifest["metrics"]["num_prompts"] == 8 and manifest["metrics"]["num_shards"] == 4
        if name != "local":
            assert manifest["metrics"]["executor"] == "ray" and manifest["metrics"]["retries"] == 0
            assert manifest["metrics"]["backend"] == "transformers"
    local = results["local"]
    assert local["dataset"] and local["rejected"], "the test needs kept and rejected samples to compare"
    assert results["ray1"] == local
    assert results["ray2"] == local


def test_a_worker_killed_mid_shard_costs_only_that_shard(write_recipe, tmp_path, tiny_path, cluster, monkeypatch):
    from posttrain.generation.ray_pool import DIE_ONCE_ENV

    run(write_recipe, RECIPE.format(executor=LOCAL), tmp_path / "local", "local")
    marker = tmp_path / "died"
    monkeypatch.setenv(DIE_ONCE_ENV, str(marker))  # the first actor to start a shard exits, once
    manifest = run(write_recipe, RECIPE.format(executor=ray_executor(2)), tmp_path / "ray", "ray")
    assert marker.exists(), "no worker died: the test hook did not fire"
    assert manifest["metrics"]["retries"] >= 1
    got, want = outputs(tmp_path / "ray" / "rs" / "distill"), outputs(tmp_path / "local" / "rs" / "distill")
    keys = [(r["prompt_index"], r["sample_index"], r["sample_type"]) for r in got["dataset"]]
    assert len(keys) == len(set(keys))  # nothing written twice
    assert got == want  # nothing lost


def test_a_worker_that_keeps_dying_fails_the_stage_naming_the_shard(
    write_recipe, tmp_path, tiny_path, cluster, monkeypatch
):
    from posttrain.generation.ray_pool import DIE_ONCE_ENV

    monkeypatch.setenv(DIE_ONCE_ENV, str(tmp_path / "died"))
    with pytest.raises(RuntimeError, match=r"shard \d: its Ray worker died 1 times \(executor.max_retries: 0\)"):
        run(write_recipe, RECIPE.format(executor=ray_executor(1, retries=0)), tmp_path / "ray", "ray")


def test_eval_on_ray_workers_equals_one_worker_and_a_local_eval(write_recipe, tmp_path, tiny_path, cluster):
    # One shard (shard_size >= the prompts) is seeded like a local eval: the same samples and metrics.
    local = run(write_recipe, EVAL.format(executor=LOCAL, shard_size=64), tmp_path / "local", "local")
    whole = run(write_recipe, EVAL.format(executor=ray_executor(1), shard_size=64), tmp_path / "whole", "whole")
    one = run(write_recipe, EVAL.format(executor=ray_executor(1), shard_size=2), tmp_path / "one", "one")
    two = run(write_recipe, EVAL.format(executor=ray_executor(2), shard_size=2), tmp_path / "two", "two")

    def samples(run_dir: Path) -> list[dict]:
        return [json.loads(x) for x in (run_dir / "ev/eval/samples.jsonl").read_text().splitlines()]

    assert samples(tmp_path / "whole") == samples(tmp_path / "local")
    assert samples(tmp_path / "two") == samples(tmp_path / "one")
    assert len(samples(tmp_path / "two")) == 12 and len(list((tmp_path / "two/ev/eval/generated").glob("*.json"))) == 3
    drop = ("seconds", "executor", "workers", "retries")
    for a, b in [(whole, local), (two, one)]:
        same = {k: v for k, v in a["metrics"].items() if k not in drop}
        assert same == {k: v for k, v in b["metrics"].items() if k not in drop}
    assert two["metrics"]["workers"] == 2 and two["metrics"]["num_prompts"] == 6


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_with_no_shard_lost_or_doubled(write_recipe, tmp_path, tiny_path):
    """`kill -9` of the whole `posttrain run` (driver and its local Ray cluster) after two shards, then the same
    command: the committed shards are kept and the output is that of an uninterrupted local run."""
    from conftest import kill_run_after

    pytest.importorskip("ray")
    text = RECIPE.format(executor=ray_executor(2)).replace("size: 8, seed: 1", "size: 30, seed: 1")
    recipe = write_recipe(text, name="killed.yaml")
    stage = tmp_path / "killed" / "rs" / "distill"
    assert kill_run_after(recipe, tmp_path / "killed", stage / "shards" / "part-00001.json")
    assert not (stage / "manifest.json").exists(), "the run finished before it was killed; slow it down"
    committed = {p.name: p.stat().st_mtime_ns for p in (stage / "dataset").glob("*.parquet")}
    manifest = run(write_recipe, text, tmp_path / "killed", "killed")
    assert manifest["metrics"]["resumed_shards"] >= 2 and manifest["metrics"]["num_prompts"] == 30
    for name, mtime in committed.items():  # finished shards were not generated again
        if (stage / "shards" / name.replace(".parquet", ".json")).exists():
            assert (stage / "dataset" / name).stat().st_mtime_ns == mtime
    local = run(write_recipe, text.replace(ray_executor(2), LOCAL), tmp_path / "local", "local")
    assert local["metrics"]["num_prompts"] == 30
    assert outputs(stage) == outputs(tmp_path / "local" / "rs" / "distill")


def test_kind_ray_without_ray_installed_is_a_validate_error(write_recipe, capsys, monkeypatch):
    import posttrain.generation.executor as executor

    monkeypatch.setattr(executor, "ray_importable", lambda: False)
    for text in (RECIPE.format(executor=ray_executor(2)), EVAL.format(executor="ray", shard_size=2)):
        assert main(["validate", write_recipe(text)]) == 2
        err = capsys.readouterr().err
        line = next(x for x in err.splitlines() if "executor.kind" in x)
        assert "pip install 'posttrain[ray]'" in line and "recipe.yaml" in line


def test_executor_settings_are_checked(write_recipe, capsys):
    text = RECIPE.format(executor="{kind: local, num_workers: 2}")
    assert main(["validate", write_recipe(text)]) == 2
    assert "executor.kind: num_workers and address are settings of kind: ray" in capsys.readouterr().err
    text = RECIPE.format(executor="{kind: ray, num_workers: 0, resources_per_worker: {CPU: -1}}")
    assert main(["validate", write_recipe(text)]) == 2
    err = capsys.readouterr().err
    assert "executor.num_workers: must be at least 1" in err and "executor.resources_per_worker.CPU" in err


TWO_STAGES = (
    RECIPE.format(executor=LOCAL)
    + """
  - name: eval
    type: eval
    data: {source: "reasoning_gym:chain_sum", size: 6, seed: 2}
    rewards: [{name: math}]
    sampling: {n: 2, temperature: 1.0, max_tokens: 8}
    generator: {backend: transformers}
    shard_size: 3
"""
)


@pytest.mark.slow
def test_two_ranks_each_generate_their_share_and_match_one_process(write_recipe, tmp_path, tiny_path):
    """Two CPU ranks under torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK as `accelerate launch` does on GPUs):
    rank 1 commits the odd shards, rank 0 the even ones and the manifest; the output is the single-process one. The eval's two shards are drawn
    one per rank, with the seeds `generate_shards` gives them in one process."""
    from data_gen.sources import SourceConfig, load_source
    from posttrain.generation import GeneratorConfig, make_generator
    from posttrain.generation.sharded import generate_shards

    run(write_recipe, RECIPE.format(executor=LOCAL), tmp_path / "one", "one")
    path = write_recipe(TWO_STAGES, name="two.yaml")
    with socket.socket() as free:  # a port nothing else uses, for the ranks' rendezvous
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    cmd = [*launch, "-m", "posttrain.cli", "run", path, "--run-dir", str(tmp_path / "two"), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stage = tmp_path / "two" / "rs" / "distill"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["metrics"]["ranks"] == 2 and manifest["metrics"]["num_prompts"] == 8
    assert (stage / "log.rank1.txt").is_file()
    assert outputs(stage) == outputs(tmp_path / "one" / "rs" / "distill")

    evaluated = tmp_path / "two" / "rs" / "eval"
    assert json.loads((evaluated / "manifest.json").read_text())["metrics"]["ranks"] == 2
    got = [json.loads(x)["completion"] for x in (evaluated / "samples.jsonl").read_text().splitlines()]
    prompts = [r["prompt"] for r in load_source(SourceConfig("reasoning_gym:chain_sum", size=6, seed=2))]
    generator = make_generator("tiny", GeneratorConfig(backend="transformers"))
    sampling = dict(n=2, temperature=1.0, top_p=1.0, max_tokens=8, stop=())
    want = generate_shards(prompts, tmp_path / "here", sampling=sampling, shard_size=3, generator=generator)
    assert got == [s.text for per_prompt in want for s in per_prompt]
