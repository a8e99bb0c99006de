"""The GRPO stage under `posttrain run --num-processes 2`: accelerate launches two CPU processes (gloo), both
train, the main one saves the model and evaluates. About 15 s alone, over a minute on a loaded 2-core machine."""

import json
import subprocess
import sys

import pytest
from test_grpo_stage import RECIPE


@pytest.mark.slow
def test_grpo_two_cpu_processes(write_recipe, tmp_path, tiny_path):
    runs = tmp_path / "runs"
    path = write_recipe(RECIPE.format(steps=2, save_steps=10, extra_rewards=""))
    cmd = [sys.executable, "-m", "posttrain.cli", "run", path, "--run-dir", str(runs), "--no-progress"]
    done = subprocess.run([*cmd, "--num-processes", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # two ranks ran: accelerate starts one process for `--cpu`, so CPU launches go through torch.distributed.run
    assert "torch.distributed.run --standalone --nproc_per_node 2" in done.stderr
    assert (runs / "grpo_test/rl/log.rank1.txt").is_file()
    m = json.loads((runs / "grpo_test/rl/manifest.json").read_text())["metrics"]
    assert m["steps"] == 2 and "eval_end/pass@1" in m
    assert (runs / "grpo_test/rl/model/config.json").is_file()
