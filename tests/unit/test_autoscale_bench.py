"""bench/autoscale.py's trace replay: dollars for a scripted trace match a hand computation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)


def run(trace: Path) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "autoscale.py"),
            "--no-cluster",
            "--trace",
            str(trace),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout)


def test_two_slices_share_one_small_on_demand_node_and_the_baselines_add_up(tmp_path):
    trace = tmp_path / "pods.csv"
    # p0: half a GPU, not interruptible, 2 h; p1: a quarter, best-effort, joins for the second hour.
    trace.write_text(
        HEADER
        + "p0,1000,1024,1,500,,LS,Running,0,7200,0\np1,1000,1024,1,250,,BE,Running,3600,7200,3600\n"
    )
    report = run(trace)
    prices = {name: p["usd_per_hour"] for name, p in report["prices"].items()}
    t = report["trace"]
    a10g, spot, a100 = prices["a10g-on-demand"], prices["a10g-spot"], prices["a100-on-demand"]
    # One A10G on-demand node for both (p1 fits beside p0), for the trace's two hours.
    assert t["by_pool"] == {"a10g-on-demand": pytest.approx(2 * a10g)}
    assert t["dollars"] == pytest.approx(2 * a10g) and t["launches"] == 1 and t["unplaceable"] == 0
    # Naive: a whole on-demand GPU per pod from its arrival to the end of the trace.
    assert t["naive_dollars"] == pytest.approx(2 * a10g + 1 * a10g)
    # A whole GPU per pod while it runs; p1 may use spot.
    assert t["whole_gpu_dollars"] == pytest.approx(2 * a10g + 1 * spot)
    per_mib = min(a10g / 23028, a100 / (8 * 81920))
    assert t["lower_bound_dollars"] == pytest.approx(
        2 * 11514 * per_mib + 1 * 5757 * min(per_mib, spot / 23028)
    )
    assert t["lower_bound_dollars"] <= t["dollars"] <= t["naive_dollars"]


def test_consolidation_moves_a_lone_slice_off_an_eight_gpu_node(tmp_path):
    trace = tmp_path / "pods.csv"
    # A 4-GPU job brings an 8-GPU A100 node; a small slice arriving once the node is no longer
    # reserved for the job lands on its free room. When the job ends the slice keeps the A100
    # alive unless consolidation moves it to an A10G.
    trace.write_text(
        HEADER + "big,1000,1024,4,1000,,LS,Running,0,3600,0\n"
        "p0,1000,1024,1,500,,LS,Running,60,86400,60\n"
    )
    t = run(trace)["trace"]
    assert t["consolidations"] >= 1
    assert t["dollars"] < t["no_consolidation_dollars"] / 5
    assert set(t["by_pool"]) == {"a100-on-demand", "a10g-on-demand"}
