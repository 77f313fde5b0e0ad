"""The README's first command: ``python -m sagalog.demo`` really crashes and resumes a saga."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_compensates_crashes_resumes_and_shows_the_journal(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-P", "-m", "sagalog.demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert (tmp_path / ".sagalog/demo/journal.db").exists()
    # Order 1: declined card, reservation released, saga compensated.
    assert "release reservation RES-1  (compensation)" in out
    assert "=> compensated: step 'charge_card' failed" in out
    # Order 2: the step was started by worker-1, killed, and finished by worker-2.
    packers = re.findall(r"\[worker pid (\d+)\] packing order 2", out)
    finisher = re.findall(r"\[worker pid (\d+)\] parcel for order 2 handed", out)
    assert len(packers) == 2 and packers[0] != packers[1], out
    assert finisher == [packers[1]]
    assert out.count("charge 39.00 to card") == 1  # completed steps are not run again
    assert "=> completed: {'reservation': 'RES-2', 'payment': 'PAY-2', 'tracking': 'TRACK-2'}" in out
    # The replay tool printed both journals, the resumed step with two attempts.
    assert "wf-order-1  (11 events" in out and "WorkflowCompensated" in out
    assert re.search(r"StepStarted\s+ship_parcel\s+2", out)
    assert "WorkflowCompleted" in out
