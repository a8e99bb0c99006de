"""`posttrain report`: the web page of a real run (SFT, an eval and rejection sampling on the tiny model) renders in
headless Chromium with no console message, every figure loaded, the stage and eval tables and the sample browser
filled; `summary.md` says the same for terminals; `posttrain runs` and `posttrain compare` read the same run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from posttrain.cli import main

RECIPE = """
name: shown
model: tiny
stages:
  - name: sft
    type: sft
    data: {source: reasoning_gym:chain_sum, size: 24, seed: 1}
    eval_size: 4
    max_steps: 3
    batch_size: 4
    max_length: 64
    eval_steps: 0
    logging_steps: 1
  - name: heldout_base
    type: eval
    model: ${model}
    data: {source: reasoning_gym:chain_sum, size: 3, seed: 9, domain: math}
    rewards: [math]
    generator: transformers
    sampling: {n: 2, max_tokens: 4}
    point: base
  - name: heldout
    type: eval
    model: ${stages.sft.model}
    data: {source: reasoning_gym:chain_sum, size: 3, seed: 9, domain: math}
    rewards: [math]
    generator: transformers
    sampling: {n: 2, max_tokens: 4}
    point: sft
  - name: distill
    type: rejection_sampling
    model: ${stages.sft.model}
    data: {source: reasoning_gym:chain_sum, size: 4, seed: 3}
    rewards: [math]
    generator: transformers
    sampling: {n: 2, max_tokens: 6}
    shard_size: 2
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    recipe = root / "shown.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), "--run-dir", str(root / "runs"), "--no-progress"]) == 0
    return root / "runs/shown"


def test_summary_lists_every_stage_with_its_result(run):
    assert main(["report", str(run)]) == 0
    summary = (run / "report/summary.md").read_text()
    assert "| sft | sft | done |" in summary and "eval_loss" in summary
    assert "| distill | rejection_sampling | done |" in summary and "acceptance=" in summary
    assert "## Evals, before -> after" in summary
    chain = summary.split("## The chain, eval by eval")[1].splitlines()
    assert chain[2].startswith("| point | math pass@1 | math reward/total | math mean_tokens | math repetition |")
    assert chain[4].startswith("| base | 0 ± 0") and chain[5].startswith("| sft | 0 ± 0")  # base ran first


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (scripts/test.sh installs it)")
def test_the_page_renders_in_a_real_browser(run, tmp_path):
    assert main(["report", str(run)]) == 0
    page = run / "report/index.html"
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--window-size=1280,1800"]  # fmt: skip
    dom = subprocess.run([*cmd, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console  # the page logs nothing: any message is an error or a warning
    html = dom.stdout
    assert 'data-images-ok="true"' in html  # every <img> loaded
    assert html.count('class="stage"') == 4 and 'id="stages"' in html and 'id="evals"' in html
    assert 'id="chain"' in html and "chain.png" in html
    assert "<img" in html and "sft.png" in html
    num_samples = len(re.findall(r'class="sample"', html))
    assert num_samples >= 3 + 3 * 2 and "rejected" in html  # eval samples and rejected samples at least
    subprocess.run([*cmd, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def test_runs_and_compare(run, capsys):
    assert main(["runs", "--run-dir", str(run.parent)]) == 0
    out = capsys.readouterr().out
    assert "shown" in out and "sft" in out and "distill" in out
    assert main(["compare", str(run), str(run)]) == 0
    out = capsys.readouterr().out
    assert "heldout" in out and "pass@1" in out and "eval_loss" in out


def test_stages_started_within_one_second_keep_their_run_order(tmp_path):
    """Two quick evals often start within the same second: `started_unix` (ms) orders them, not their names."""
    import json

    from posttrain.runs import read_run

    for name, unix in (("heldout_base", 1796169000.125), ("heldout", 1796169000.750)):
        (tmp_path / name).mkdir()
        manifest = {"type": "eval", "inputs": {}, "metrics": {}, "started_at": "2026-12-02T00:10:00"}
        (tmp_path / name / "manifest.json").write_text(json.dumps({**manifest, "started_unix": unix}))
    assert [s.name for s in read_run(tmp_path).stages] == ["heldout_base", "heldout"]
