"""The `mix` stage through the recipe runner: outputs and manifest metrics, a two-stage chain, validation of bad
configs (all problems at once), and a crash mid-write resumed by the runner to the same output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from posttrain.cli import main
from posttrain.errors import ConfigError
from posttrain.recipe.loader import load_recipe

WORDS = [f"{a}{b}{c}" for a in "bdfgklmnprstvz" for b in "aeiou" for c in "nrstlx"]

RECIPE = """
name: mixes
model: tiny
stages:
  - name: mix_all
    type: mix
    sources:
      - {{data: "jsonl:{dir}/math.jsonl", weight: 0.6, domain: math}}
      - {{data: "parquet:{dir}/chat.parquet", weight: 0.4}}
    size: 500
    rows_per_shard: 120
    num_workers: 1
    decontaminate: {{against: []}}
  - name: mix_chat
    type: mix
    sources: ["${{stages.mix_all.dataset}}"]
    num_workers: 1
    decontaminate: {{against: []}}
"""


def _write_sources(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)

    def conv() -> list[dict]:
        return [
            {"role": "user", "content": " ".join(rng.choice(WORDS, 10))},
            {"role": "assistant", "content": " ".join(rng.choice(WORDS, 30))},
        ]

    math = [{"messages": conv()} for _ in range(200)]
    math.append(math[0])
    (folder / "math.jsonl").write_text("".join(json.dumps(r) + "\n" for r in math))
    chat = [{"messages": conv(), "domain": "chat"} for _ in range(100)]
    pq.write_table(pa.Table.from_pylist(chat), folder / "chat.parquet")


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("part-*.parquet")))).hexdigest()


def _run(recipe: str, runs: Path, *extra: str) -> int:
    return main(["run", recipe, "--run-dir", str(runs), "--no-progress", *extra])


def test_mix_stages_write_dataset_card_plot_and_metrics(write_recipe, tmp_path):
    _write_sources(tmp_path)
    runs = tmp_path / "runs"
    assert _run(write_recipe(RECIPE.format(dir=tmp_path)), runs) == 0
    stage = runs / "mixes" / "mix_all"
    manifest = json.loads((stage / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["rows_out"] == 500 and metrics["rows_in"] == 301 and metrics["removed.exact_dedup"] == 1
    assert metrics["source.math.output"] == 300 and metrics["source.chat.output"] == 200
    assert metrics["domain.chat.input"] == 100 and metrics["source.chat.repeats"] == 2.0
    for name in ("card", "plot", "composition", "removed"):
        assert Path(manifest["outputs"][name]).is_file(), name
    assert len(list((stage / "dataset").glob("part-*.parquet"))) == 5 and not (stage / "work").exists()
    logged = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["rows"] for r in logged] == [301, 301, 301, 301, 300, 300, 500]
    second = json.loads((runs / "mixes" / "mix_chat" / "manifest.json").read_text())["metrics"]
    assert second["rows_in"] == 500 and second["source.mix_all.input"] == 500
    # The second mix sees the upsampled copies of the first as exact duplicates of each other.
    assert second["rows_out"] == 300


def test_bad_mix_config_reports_every_problem(write_recipe, tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    recipe = f"""
name: bad
stages:
  - name: m
    type: mix
    sources:
      - {{data: "jsonl:{tmp_path}/a.jsonl", weight: 1, count: 5}}
      - {{data: "jsonl:{tmp_path}/a.jsonl", wieght: 2}}
      - {{data: "jsonl:{tmp_path}/missing.jsonl"}}
    dedup: {{near_threshold: 1.2, num_perm: 8}}
    decontaminate: {{ngram: 1, min_ngram: 1}}
    max_tokens: 0
"""
    with pytest.raises(ConfigError) as err:
        load_recipe(write_recipe(recipe))
    text = str(err.value)

    for expected in (
        "sources.0.weight: give weight (1.0) or count (5), not both",
        "sources.1.wieght: unknown field (did you mean 'weight'?)",
        "dedup.near_threshold: must be in (0, 1), got 1.2",
        "dedup.num_perm: must be in [16, 1024], got 8",
        "decontaminate.ngram: must be in [2, 64], got 1",
        "sources.2.data.source: no file or folder matches",
    ):
        assert expected in text, expected


def test_mix_stage_crash_then_resume_gives_the_same_output(write_recipe, tmp_path, monkeypatch):
    import data_gen.mix.write as write

    _write_sources(tmp_path)
    recipe = write_recipe(RECIPE.format(dir=tmp_path))
    assert _run(recipe, tmp_path / "clean") == 0
    finish = write._finish_shard
    done = []

    def crash_after_two(*args):
        if len(done) == 2:
            raise RuntimeError("simulated crash")
        done.append(args)
        finish(*args)

    monkeypatch.setattr(write, "_finish_shard", crash_after_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(recipe, tmp_path / "runs")
    monkeypatch.setattr(write, "_finish_shard", finish)
    assert _run(recipe, tmp_path / "runs") == 0
    manifest = json.loads((tmp_path / "runs" / "mixes" / "mix_all" / "manifest.json").read_text())
    assert manifest["resumed"] is True
    clean = tmp_path / "clean" / "mixes"
    assert _digest(tmp_path / "runs" / "mixes" / "mix_all" / "dataset") == _digest(clean / "mix_all" / "dataset")
    assert _digest(tmp_path / "runs" / "mixes" / "mix_chat" / "dataset") == _digest(clean / "mix_chat" / "dataset")
