"""Other projects' verifier test cases (the shared conformance suite, ../shared/conformance from the repo root) scored
with our rewards by the suite's own scorer: overall agreement must not slip below the floor, and every row the
suite's first reading calls our defect (D1-D6) must agree. The suite's rows stay where they lie; none is copied
here. See benchmarks/CONFORMANCE.md for the figures and the rows we choose to disagree with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
FLOOR = 707  # of 746 rows; 709 agree (95.0%): see benchmarks/CONFORMANCE.md


@pytest.fixture(scope="module")
def scored() -> str:
    scorer = SUITE / "score_external.py"
    if not scorer.is_file():
        pytest.skip(f"the conformance suite is not at {SUITE} (it comes from ../shared/conformance); nothing to score")
    # The venv's python runs `posttrain rewards score` for each group of rows, as a user would.
    proc = subprocess.run(
        [sys.executable, str(scorer), sys.executable, "--show", "1000"], capture_output=True, text=True, timeout=300
    )
    assert "TOTAL:" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_overall_agreement_does_not_slip_below_the_floor(scored):
    agree, total = map(int, re.search(r"TOTAL: (\d+) agree / (\d+) total", scored).groups())
    assert agree >= FLOOR, f"{agree} / {total} rows agree, below the floor of {FLOOR}:\n{scored[:6000]}"


def test_every_row_read_as_our_defect_agrees(scored):
    judgement_file = SUITE / "data" / "external_judgement.json"
    if not judgement_file.is_file():
        pytest.skip(f"no first reading of the disagreements at {judgement_file}")
    judgement = json.loads(judgement_file.read_text())
    disagreeing = re.findall(r"^- (\S+)  \[", scored, flags=re.MULTILINE)
    ours = [f"{row}: {judgement[row]}" for row in disagreeing if re.match(r"D\d", judgement.get(row, ""))]
    assert not ours, "rows the suite reads as our defects disagree:\n" + "\n".join(ours)
