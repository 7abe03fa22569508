"""The packing core: fragmentation arithmetic, policy safety, trace reading and replays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucost import openb
from gpucost.core.packing.cluster import PackingState
from gpucost.core.packing.frag import FragIndex, ShapeDistribution
from gpucost.core.packing.model import NodeSpec, Task
from gpucost.core.packing.policies import POLICIES, make_policy, waste_table
from gpucost.core.packing.replay import inflate, replay_dynamic, replay_static

ROOT = Path(__file__).resolve().parents[2]

nodes_st = st.lists(
    st.builds(
        lambda i, gpus, model, cpu: NodeSpec(f"n{i}", cpu, 64_000, gpus, model if gpus else None),
        st.integers(0, 999),
        st.integers(0, 8),
        st.sampled_from(["T4", "V100", "A10"]),
        st.integers(2_000, 96_000),
    ),
    min_size=1,
    max_size=12,
)
tasks_st = st.one_of(
    st.builds(
        lambda c, m: Task(cpu_milli=c, memory_mib=m), st.integers(0, 32_000), st.integers(0, 16_000)
    ),
    st.builds(
        lambda c, milli, models: Task(cpu_milli=c, gpus=1, gpu_milli=milli, models=models),
        st.integers(0, 16_000),
        st.integers(1, 1000),
        st.sampled_from([None, frozenset({"T4"}), frozenset({"V100", "A10"})]),
    ),
    st.builds(lambda c, k: Task(cpu_milli=c, gpus=k), st.integers(0, 32_000), st.integers(1, 8)),
)


def naive_frag(cluster: PackingState, n: int, dist: ShapeDistribution) -> float:
    """The paper's definition, one shape at a time."""
    free = cluster.gpu_free[n][: cluster.gpu_count[n]]
    total = free.sum()
    frag = 0.0
    for shape, f in dist.shapes:
        need = cluster.demand(shape)[n]
        runs = (
            shape.gpus
            and cluster.model_mask(shape.models)[n]
            and cluster.cpu_free[n] >= shape.cpu_milli
            and (free >= need).sum() >= shape.gpus
        )
        frag += f * (free[free < need].sum() if runs else total)
    return frag


@settings(max_examples=150, deadline=None)
@given(
    nodes=nodes_st,
    stream=st.lists(tasks_st, max_size=30),
    policy=st.sampled_from(POLICIES),
    seed=st.integers(0, 9),
)
def test_policies_place_exactly_when_something_fits_and_never_over_commit(
    nodes, stream, policy, seed
):
    cluster = PackingState(nodes)
    chooser = make_policy(policy, ShapeDistribution.of(stream), seed)
    for task in stream:
        feasible = cluster.feasible(task)
        where = chooser.choose(cluster, task)
        assert (where is not None) == bool(feasible.any())
        if where is not None:
            assert feasible[where.node]
            cluster.apply(task, where)  # raises on any over-commit
    assert (
        (cluster.cpu_free >= 0).all()
        and (cluster.mem_free >= 0).all()
        and (cluster.gpu_free >= 0).all()
    )
    assert cluster.used_units == int(
        (cluster.units * cluster.gpu_count).sum() - cluster.gpu_free.sum()
    )


@settings(max_examples=60, deadline=None)
@given(nodes=nodes_st, stream=st.lists(tasks_st, min_size=1, max_size=25), seed=st.integers(0, 9))
def test_frag_index_matches_the_definition_before_and_after_moves(nodes, stream, seed):
    cluster = PackingState(nodes)
    dist = ShapeDistribution.of(stream)
    index = FragIndex(cluster, dist)
    fgd = make_policy("fgd", dist, seed)
    for task in stream:
        found = fgd.delta(cluster, task)
        if found is not None:
            rows, values, delta = found
            r = int(np.argmin(delta))
            node, before = int(rows[r]), naive_frag(cluster, int(rows[r]), dist)
            gpus = tuple(
                int(i) for i in np.flatnonzero(cluster.gpu_free[node] == values[r])[: task.gpus]
            )
            cluster.apply(task, cluster.placement(node, task, gpus))
            assert naive_frag(cluster, node, dist) - before == pytest.approx(delta[r], abs=1e-6)
        index.refresh()
        expected = [naive_frag(cluster, n, dist) for n in range(len(cluster))]
        assert index.frag == pytest.approx(expected, abs=1e-6)


def test_waste_table_is_the_expected_leftover():
    phi = waste_table(1000, {300: 1.0})
    assert phi[1000] == pytest.approx(100)  # 3 x 300 fit, 100 left
    assert phi[600] == 0 and phi[299] == 299
    mixed = waste_table(1000, {500: 0.5, 1000: 0.5})
    assert mixed[1000] == pytest.approx(0.5 * 0 + 0.5 * (0.5 * 0 + 0.5 * 500))


def test_typical_shapes_cover_the_popular_ones_and_renormalise():
    tasks = [Task(gpus=1, gpu_milli=500)] * 90 + [Task(gpus=8)] * 6 + [Task(cpu_milli=1)] * 4
    typical = ShapeDistribution.of(tasks, coverage=0.95)
    assert [(s.gpus, f) for s, f in typical.shapes] == [
        (1, pytest.approx(90 / 96)),
        (8, pytest.approx(6 / 96)),
    ]
    by_gpu = ShapeDistribution.of(tasks, weight="gpu")
    assert dict((s.gpus, f) for s, f in by_gpu.shapes)[8] == pytest.approx(48 / 93)


def test_fgd_spreads_less_than_random_would():
    """Two shared GPUs, tasks of 0.6 then 0.4: FGD puts the 0.4 next to the 0.6 (exact fill)."""
    nodes = [NodeSpec("a", 8000, 8000, 1, "T4"), NodeSpec("b", 8000, 8000, 1, "T4")]
    dist = ShapeDistribution.of([Task(gpus=1, gpu_milli=600), Task(gpus=1, gpu_milli=400)])
    for name in ("fgd", "gpucost"):
        cluster = PackingState(nodes)
        policy = make_policy(name, dist, 0)
        first = policy.choose(cluster, Task(gpus=1, gpu_milli=600))
        cluster.apply(Task(gpus=1, gpu_milli=600), first)
        second = policy.choose(cluster, Task(gpus=1, gpu_milli=400))
        assert second.node == first.node, name


def test_gpucost_puts_cpu_only_tasks_where_they_strand_no_gpu():
    """The typical GPU shape asks 4 CPUs per GPU. On "free" the 8-CPU task would leave 28 CPUs for
    8 free GPUs (one GPU's worth unfed); on the two nodes whose GPUs are all taken it strands
    nothing. FGD sees no change anywhere (the shape's 4 CPUs still fit) and follows the node order
    to all three; gpucost never takes "free", and between the others follows the node order too."""
    nodes = [
        NodeSpec("free", 36_000, 800_000, 8, "V100"),
        NodeSpec("full-a", 96_000, 800_000, 8, "V100"),
        NodeSpec("full-b", 40_000, 800_000, 8, "V100"),
    ]
    dist = ShapeDistribution(((Task(cpu_milli=4_000, gpus=1), 0.8), (Task(cpu_milli=8_000), 0.2)))
    picks: dict[str, set[str]] = {"fgd": set(), "gpucost": set()}
    for seed in range(20):
        for name, seen in picks.items():
            cluster = PackingState(nodes)
            for node in (1, 2):
                cluster.apply(Task(gpus=8), cluster.placement(node, Task(gpus=8), tuple(range(8))))
            seen.add(
                nodes[
                    make_policy(name, dist, seed).choose(cluster, Task(cpu_milli=8_000)).node
                ].name
            )
    assert picks == {"fgd": {"free", "full-a", "full-b"}, "gpucost": {"full-a", "full-b"}}


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown placement policy 'tetris'"):
        make_policy("tetris", ShapeDistribution(()))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_malformed_trace_row_names_file_and_line(tmp_path):
    pods = write(
        tmp_path / "pods.csv",
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,10,1,500\np1,lots,10,1,500\n",
    )
    with pytest.raises(
        openb.TraceError, match=r"pods.csv:3: cpu_milli must be a number, got 'lots'"
    ):
        openb.read_pods(pods)
    short = write(
        tmp_path / "short.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,10\n"
    )
    with pytest.raises(openb.TraceError, match=r"short.csv:2: expected 5 fields"):
        openb.read_pods(short)
    nodes = write(tmp_path / "nodes.csv", "sn,cpu_milli,memory_mib,gpu\nn0,1000,10,1\n")
    with pytest.raises(openb.TraceError, match=r"nodes.csv:1: missing column\(s\) model"):
        openb.read_nodes(nodes)
    frac = write(
        tmp_path / "frac.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1,1,2,500\n"
    )
    with pytest.raises(openb.TraceError, match=r"frac.csv:2: a 2-GPU pod must ask for whole GPUs"):
        openb.read_pods(frac)


def test_a_task_no_node_can_ever_hold_is_counted_not_fatal():
    nodes = [NodeSpec("n", 8000, 8000, 2, "T4")]
    tasks = [
        Task(gpus=1, gpu_milli=500),
        Task(gpus=4),
        Task(gpus=1, models=frozenset({"A100"})),
        Task(gpus=1),
    ]
    result = replay_static(
        nodes,
        tasks,
        make_policy("gpucost", ShapeDistribution.of(tasks)),
        ShapeDistribution.of(tasks),
    )
    assert (result.tasks, result.placed, result.unplaceable) == (4, 2, 2)


def test_inflate_shuffles_the_whole_trace_then_resamples_to_the_target():
    tasks = [Task(gpus=1, gpu_milli=100 * (i % 10 + 1), name=str(i)) for i in range(50)]
    work = inflate(tasks, capacity_milli=40_000, seed=7, ratio=1.3)
    assert sorted(t.name for t in work[:50]) == sorted(t.name for t in tasks)
    asked = sum(t.gpu_request_milli() for t in work)
    assert 52_000 - 1000 < asked <= 52_000
    assert work == inflate(tasks, capacity_milli=40_000, seed=7, ratio=1.3)


def test_dynamic_replay_counts_gpu_hours_by_hand():
    nodes = [NodeSpec("n", 8000, 8000, 2, "T4")]
    half = Task(gpus=1, gpu_milli=500)
    timed = [(half, 0, 3600), (half, 0, 7200), (Task(gpus=1), 3600, 7200)]
    result = replay_dynamic(nodes, timed, make_policy("firstfit", ShapeDistribution(())))
    # Both halves share GPU 0 for an hour; then GPU 0 (one half) and GPU 1 (the whole) for an hour.
    assert result.gpu_hours == pytest.approx(1 + 2)
    assert (result.peak_gpus, result.failed) == (2, 0)


def test_benchmark_json_schema_on_a_small_trace(tmp_path):
    nodes = write(
        tmp_path / "nodes.csv",
        "sn,cpu_milli,memory_mib,gpu,model\n"
        + "".join(f"n{i},32000,131072,{g},T4\n" for i, g in enumerate([1, 2, 4, 8] * 3)),
    )
    rows = "".join(
        f"p{i},{1000 * (i % 4)},1024,{1 if i % 5 else 0},{(i * 137) % 1000 + 1},,LS,Running,"
        f"{i},{i + 50},{i}\n"
        for i in range(120)
    )
    pods = write(
        tmp_path / "pods.csv",
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
        + rows,
    )
    png = tmp_path / "fig.png"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "packing.py"),
            "--trace",
            str(pods),
            "--nodes",
            str(nodes),
            "--seeds",
            "42,43",
            "--json",
            "--png",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["trace"] == "pods"
    assert set(report["policies"]) == set(POLICIES)
    for entry in report["policies"].values():
        assert set(entry["alloc_pct"]) == {"90", "95", "100", "110", "120", "130"}
        assert set(entry["frag_pct"]) == set(entry["alloc_pct"])
        assert entry["seconds_per_replay"] > 0
        assert all(0 <= v <= 100 for v in entry["alloc_pct"].values())
    assert report["traces"]["pods"]["policies"]["gpucost"]["dynamic"]["gpu_hours"] > 0
    assert png.stat().st_size > 10_000


def test_benchmark_stops_on_a_malformed_trace(tmp_path):
    pods = write(
        tmp_path / "bad.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1,1,1,5000\n"
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "packing.py"), "--trace", str(pods)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "bad.csv:2: gpu_milli must be in 1..1000" in out.stdout + out.stderr
