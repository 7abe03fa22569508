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


def test_the_bill_uses_the_reservation_first_and_a_blind_planner_pays_twice(tmp_path):
    trace = tmp_path / "pods.csv"
    # Half a GPU, not interruptible, for the trace's 2 h.
    trace.write_text(HEADER + "p0,1000,1024,1,500,,LS,Running,0,7200,0\n")
    report = run(trace)
    prices = {name: p["usd_per_hour"] for name, p in report["prices"].items()}
    a10g, a100 = prices["a10g-on-demand"], prices["a100-on-demand"]
    bill = report["bill"]
    reserved = bill["reserved_nodes"] * a100 * 2  # 2 h of reserved nodes, used or not
    ours, blind = bill["runs"]["gpucost"], bill["runs"]["blind"]
    # The slice goes on a reserved A100 (already paid) instead of a new A10G.
    assert ours["effective_dollars"] == pytest.approx(reserved, abs=0.01)
    assert ours["on_demand_dollars"] == 0 and ours["reservation_utilization"] > 0
    # Blind to the prepayment, the A10G on-demand node looks cheaper per MiB: bought on top.
    assert blind["effective_dollars"] == pytest.approx(reserved + 2 * a10g, abs=0.01)
    assert blind["reservation_utilization"] == 0
    assert blind["ratio_to_gpucost"] > 1
    # Without the reservation: only the A10G.
    assert bill["runs"]["no_reservation"]["effective_dollars"] == pytest.approx(2 * a10g, abs=0.01)


def test_a_spot_price_spike_sends_interruptible_work_to_on_demand_until_it_passes(tmp_path):
    trace = tmp_path / "pods.csv"
    day = 86400
    # Best-effort quarter-GPU pods for an hour: before, during (day 31) and after the spike.
    rows = [f"p{i},1000,1024,1,250,,BE,Running,{t},{t + 3600},{t}" for i, t in
            enumerate((0, 31 * day, 40 * day))]  # fmt: skip
    trace.write_text(HEADER + "\n".join(rows) + "\n")
    report = run(trace)
    a10g = report["prices"]["a10g-on-demand"]["usd_per_hour"]
    plain = report["bill"]["runs"]["no_reservation"]
    # Only the pod inside the spike pays on-demand (its hour and the 10 min idleTimeout after);
    # the other two ran on spot at its moved price.
    assert plain["on_demand_dollars"] == pytest.approx(a10g * 70 / 60, abs=0.01)
    assert plain["list_dollars"] < 3 * a10g * 70 / 60
