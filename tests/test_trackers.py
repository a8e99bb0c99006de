"""Trackers: a recipe's `report_to` reaches every stage. A 2-step SFT on the tiny model logs through TRL's own
TensorBoard and trackio integrations, an eval stage through ours, and both end with their summary; the test reads
back what the real TensorBoard and trackio writers wrote (event files, trackio's local SQLite store)."""

from __future__ import annotations

import pytest

from posttrain.cli import main
from posttrain.errors import ConfigError
from posttrain.recipe.loader import load_recipe

RECIPE = """
name: tracked
model: tiny
report_to: [tensorboard, trackio]
stages:
  - name: sft
    type: sft
    data: {source: reasoning_gym:chain_sum, size: 24, seed: 1}
    eval_size: 4
    max_steps: 2
    batch_size: 4
    max_length: 64
    eval_steps: 0
    logging_steps: 1
  - name: heldout
    type: eval
    model: ${stages.sft.model}
    data: {source: reasoning_gym:chain_sum, size: 3, seed: 9}
    rewards: [math]
    generator: transformers
    sampling: {n: 2, max_tokens: 4}
"""


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_and_eval_stages_reach_tensorboard_and_trackio(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = tmp_path / "runs"
    assert main(["run", write_recipe(RECIPE), "--run-dir", str(runs), "--no-progress"]) == 0

    sft = _scalars(runs / "tracked/sft/tensorboard")
    assert [step for step, _ in sft["train/loss"]] == [1, 2]  # TRL's integration, live
    assert "summary/eval_loss_end" in sft  # ours, after the stage
    heldout = _scalars(runs / "tracked/heldout/tensorboard")
    assert heldout["summary/pass@1"][0][1] == 0.0 and "summary/mean_tokens" in heldout

    import importlib

    import trackio.sqlite_storage as storage

    importlib.reload(storage)  # TRACKIO_DIR is read at import
    runs_logged = storage.SQLiteStorage.get_runs("tracked")
    assert {"sft", "heldout"} <= set(runs_logged)
    sft_logs = storage.SQLiteStorage.get_logs("tracked", "sft")
    assert any("train/loss" in row for row in sft_logs)
    assert any("summary/eval_loss_end" in row for row in sft_logs)
    heldout_logs = storage.SQLiteStorage.get_logs("tracked", "heldout")
    assert any(row.get("summary/num_prompts") == 3 for row in heldout_logs)


def test_unknown_or_missing_tracker_is_a_validation_error(write_recipe):
    with pytest.raises(ConfigError, match=r"report_to: unknown tracker 'tensorbord'; use tensorboard, trackio"):
        load_recipe(write_recipe("report_to: tensorbord\nstages: [{name: a, type: echo}]\n"))
    assert load_recipe(write_recipe("report_to: none\nstages: [{name: a, type: echo}]\n")).report_to == []
