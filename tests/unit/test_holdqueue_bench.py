"""bench/holdqueue.py compares like with like: its baseline drains in the same order as
routing.HoldQueue, and the figures it reports are the ones it timed."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "holdqueue.py"


def test_the_baseline_and_the_hold_queue_drain_in_the_same_order():
    bench = runpy.run_path(str(BENCH))
    _, baseline = bench["sorted_each_slot"](400)
    _, ours = bench["hold_queue"](400)
    assert baseline == ours
    # the objective matters: the fresh half goes first, the backlog past it after, oldest first
    assert (
        ours[:3] == [200, 201, 202]
        and ours[200:203] == [0, 1, 2]
        and sorted(ours) == list(range(400))
    )


def test_the_json_reports_each_backlog_with_its_ratio():
    args = ["--backlogs", "200,400", "--baseline-max", "200", "--json"]
    out = subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, check=True
    ).stdout
    runs = json.loads(out)["runs"]
    assert [r["backlog"] for r in runs] == [200, 400]
    assert [r["baseline_extrapolated"] for r in runs] == [False, True]
    for r in runs:
        assert r["vs_baseline"] == r["hold_queue_s"] / r["baseline_s"]
        assert r["hold_queue_us_per_slot"] == r["hold_queue_s"] / r["backlog"] * 1e6
