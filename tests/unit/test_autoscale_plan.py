"""The autoscaling planner with a fake clock: batching, replace-then-drain, cool-downs, drains.

Each test feeds ``plan`` the snapshot the API would show after the previous step's commands were
applied (marks are read back from the nodes, as the operator reads its annotations), so the steps
are what an operator restarted between any two of them would see.
"""

from __future__ import annotations

from dataclasses import replace

from gpucost.core.autoscale import (
    Batch,
    Cooldown,
    Disrupt,
    Evict,
    Launch,
    MarkConsolidatable,
    MarkIdle,
    MarkReplacing,
    PoolView,
    Snapshot,
    Terminate,
    Timing,
    plan,
)
from gpucost.core.inventory import GPU, Allocation, Ask, GPUNode
from gpucost.core.scaledown import NodePod, NodeState, PoolLimits, Replacing
from gpucost.core.scaleup import Pending

T0 = 50_000.0
TIMING = Timing(batch_idle=1.0, batch_max=10.0, reservation=30.0, cooldown=300.0)
SLICE = Ask(memory_mib=10_000)
LIMITS = PoolLimits(min_nodes=0, idle_timeout_s=600, disruption_budget=1, consolidate_after_s=60)


def template(pool: str, price: float, gpus: int, mib: int = 24_000) -> GPUNode:
    return GPUNode(
        f"<new {pool} node>",
        pool,
        "on-demand",
        price,
        tuple(GPU(i, "L4", mib) for i in range(gpus)),
    )


BIG = template("big", 8.0, 8, 80_000)
SMALL = template("small", 1.0, 1)


def pools(*, joining: int = 0, cooldown: dict[str, float] | None = None) -> dict[str, PoolView]:
    cooldown = cooldown or {}
    return {
        t.pool: PoolView(
            t.pool,
            t,
            LIMITS,
            100,
            0,
            joining if t.pool == "small" else 0,
            cooldown.get(t.pool, 0.0),
            20.0,
        )
        for t in (BIG, SMALL)
    }


def snapshot(
    now: float, *, nodes=(), states=(), held=(), pending=(), movable=None, **pool_kw
) -> Snapshot:
    return Snapshot(
        now,
        pools(**pool_kw),
        list(nodes),
        list(states),
        list(held),
        list(pending),
        movable or {},
        "gpucost",
    )


def settled(work, now):
    """The batch window after the same pending work was seen a while ago: ready to provision."""
    return plan(snapshot(now - 5, pending=work), Batch(), TIMING).batch


def of(commands, kind):
    return [c for c in commands if isinstance(c, kind)]


def test_a_batch_is_provisioned_once_pending_work_stops_changing_for_batch_idle():
    work = [Pending("InferencePool ns/a", SLICE, 3)]
    first = plan(snapshot(T0, pending=work), Batch(), TIMING)
    assert not of(first.commands, Launch) and first.wake_at == T0 + 1.0
    still = plan(snapshot(T0 + 0.5, pending=work), first.batch, TIMING)
    assert not of(still.commands, Launch)
    ready = plan(snapshot(T0 + 1.0, pending=work), still.batch, TIMING)
    (launch,) = of(ready.commands, Launch)
    # Three 10 GB slices: one small node holds two, the third needs another; the big node costs
    # more.
    assert (launch.pool, launch.count) == ("small", 2) and launch.owners() == {
        "InferencePool ns/a": 3
    }
    assert launch.reserved_until == T0 + 1.0 + 20.0 + 30.0  # boot delay and the reservation


def test_a_pool_waking_from_zero_is_provisioned_at_once_with_no_batch_window():
    """Its requests are held at the gateway: each second of batching is a second of their wait."""
    waking = [Pending("InferencePool ns/a", SLICE, 1, waking=True)]
    (launch,) = of(plan(snapshot(T0, pending=waking), Batch(), TIMING).commands, Launch)
    assert launch.owners() == {"InferencePool ns/a": 1}
    growing = [Pending("InferencePool ns/a", SLICE, 1)]
    assert not of(plan(snapshot(T0, pending=growing), Batch(), TIMING).commands, Launch)


def test_work_that_keeps_changing_is_provisioned_after_batch_max_at_the_latest():
    batch, now = Batch(), T0
    for step in range(10):
        decision = plan(
            snapshot(now, pending=[Pending("InferencePool ns/a", SLICE, step + 1)]), batch, TIMING
        )
        assert not of(decision.commands, Launch), step
        batch, now = decision.batch, now + 0.9
    decision = plan(
        snapshot(T0 + 10.0, pending=[Pending("InferencePool ns/a", SLICE, 11)]), batch, TIMING
    )
    assert sum(c.count for c in of(decision.commands, Launch)) == 6


def test_each_new_node_carries_the_gpu_slots_the_plan_packed_for_each_owner():
    work = [
        Pending("InferencePool ns/big", Ask(gpus=2), 3),
        Pending("InferencePool ns/small", Ask(memory_mib=30_000), 4),
    ]
    decision = plan(snapshot(T0 + 5, pending=work), settled(work, T0 + 5), TIMING)
    (launch,) = of(decision.commands, Launch)
    assert (
        launch.pool == "big" and launch.count == 1
    )  # 6 whole GPUs and 4 slices fit one 8-GPU node
    slots = launch.nodes[0].slots
    whole = [s.gpu_indices for s in slots if s.owner == "InferencePool ns/big"]
    sliced = [s.gpu_indices for s in slots if s.owner == "InferencePool ns/small"]
    assert len(whole) == 3 and all(len(g) == 2 for g in whole) and len(sliced) == 4
    used = [i for g in whole for i in g]
    assert len(set(used)) == 6 and not set(used) & {
        i for g in sliced for i in g
    }  # no GPU given twice


def test_a_pool_cooling_down_after_a_failed_launch_is_skipped_until_its_cooldown_ends():
    work = [Pending("InferencePool ns/a", SLICE, 1)]
    ready = settled(work, T0 + 5)
    decision = plan(snapshot(T0 + 5, pending=work), ready, TIMING)
    (launch,) = of(decision.commands, Launch)
    assert launch.pool == "small" and launch.on_failure == (Cooldown("small", T0 + 5 + 300.0),)
    cooling = plan(snapshot(T0 + 6, pending=work, cooldown={"small": T0 + 305}), ready, TIMING)
    assert [c.pool for c in of(cooling.commands, Launch)] == ["big"]  # the fallback, dearer pool
    over = plan(snapshot(T0 + 305, pending=work, cooldown={"small": T0 + 305}), ready, TIMING)
    assert [c.pool for c in of(over.commands, Launch)] == ["small"]


def busy_big_node(**kw) -> tuple[GPUNode, NodeState]:
    node = replace(BIG, name="a100-1")
    pods = (NodePod("ns", "a-0", uses_gpu=True),)
    return node, NodeState("a100-1", "big", True, pods, **kw)


def test_replace_then_drain_marks_the_node_before_launching_and_drains_once_the_replacement_is_up():
    node, state = busy_big_node()
    held = [Allocation("a100-1", 0, 10_000)]
    movable = {"a100-1": [("InferencePool ns/a", SLICE)]}
    # First look: the node becomes a candidate; consolidateAfter counts from here (a node mark).
    first = plan(
        snapshot(T0, nodes=[node], states=[state], held=held, movable=movable), Batch(), TIMING
    )
    assert of(first.commands, MarkConsolidatable) == [MarkConsolidatable("a100-1", T0)]
    assert first.wake_at == T0 + 60
    # After consolidateAfter: the replacement is recorded on the node, then launched.
    state = replace(state, consolidatable_since=T0)
    second = plan(
        snapshot(T0 + 60, nodes=[node], states=[state], held=held, movable=movable), Batch(), TIMING
    )
    marks, launches = of(second.commands, MarkReplacing), of(second.commands, Launch)
    assert [m.node for m in marks] == ["a100-1"] and marks[0].since == T0 + 60
    assert second.commands.index(marks[0]) < second.commands.index(launches[0])
    (launch,) = launches
    assert launch.pool == "small" and launch.count == 1
    assert (
        MarkReplacing("a100-1", None) in launch.on_failure
    )  # a refused launch rolls the mark back
    assert not of(second.commands, Disrupt)
    # While the replacement boots nothing else moves (an operator restarted here reads the mark).
    replacing = replace(state, replacing=Replacing(T0 + 60, marks[0].message))
    booting = NodeState("small-1", "small", False)
    third = plan(
        snapshot(T0 + 70, nodes=[node], states=[replacing, booting], held=held, movable=movable),
        Batch(),
        TIMING,
    )
    assert not of(third.commands, Disrupt) and not of(third.commands, Launch)
    # The replacement is Ready: drain the old node, once, and clear the mark.
    up = NodeState("small-1", "small", True)
    fourth = plan(
        snapshot(T0 + 90, nodes=[node], states=[replacing, up], held=held, movable=movable),
        Batch(),
        TIMING,
    )
    (drain,) = of(fourth.commands, Disrupt)
    assert drain.disruption.node == "a100-1" and "fit on" in drain.disruption.message
    assert not of(fourth.commands, Launch)  # the drain's patch clears the mark with the cordon


def test_a_drain_evicts_what_is_left_and_terminates_the_node_only_once_it_is_empty():
    node = replace(SMALL, name="small-1", schedulable=False)
    pods = (
        NodePod("ns", "a-0", True),
        NodePod("ns", "a-1", True, deleting=True),
        NodePod("kube-system", "agent", False, daemon=True),
    )
    draining = NodeState("small-1", "small", True, pods, disruption="Idle")
    decision = plan(snapshot(T0, nodes=[node], states=[draining]), Batch(), TIMING)
    assert of(decision.commands, Evict) == [
        Evict("small-1", "small", "ns", "a-0")
    ]  # not the one going
    assert not of(decision.commands, Terminate)
    empty = replace(draining, pods=pods[2:])  # only the DaemonSet pod is left
    decision = plan(snapshot(T0 + 5, nodes=[node], states=[empty]), Batch(), TIMING)
    assert of(decision.commands, Terminate) == [Terminate("small-1", "small", "Idle", 1.0)]


def test_an_idle_node_is_marked_then_drained_when_its_idle_timeout_runs_out():
    node = replace(SMALL, name="small-1")
    idle = NodeState("small-1", "small", True)
    first = plan(snapshot(T0, nodes=[node], states=[idle]), Batch(), TIMING)
    assert of(first.commands, MarkIdle) == [MarkIdle("small-1", T0)] and first.wake_at == T0 + 600
    marked = replace(idle, idle_since=T0)
    early = plan(snapshot(T0 + 599, nodes=[node], states=[marked]), Batch(), TIMING)
    assert not of(early.commands, Disrupt)
    due = plan(snapshot(T0 + 600, nodes=[node], states=[marked]), Batch(), TIMING)
    assert [d.disruption.node for d in of(due.commands, Disrupt)] == ["small-1"]


def test_a_new_node_starts_its_idle_clock_once_the_pool_it_was_bought_for_stops_waiting():
    node = replace(SMALL, name="small-1")
    owner = "InferencePool ns/a"
    new = NodeState(
        "small-1", "small", True, reserved_for=frozenset({owner}), reserved_until=T0 + 30
    )
    waits = plan(
        snapshot(T0, nodes=[node], states=[new], pending=[Pending(owner, SLICE)]), Batch(), TIMING
    )
    placed_elsewhere = plan(snapshot(T0 + 1, nodes=[node], states=[new]), Batch(), TIMING)
    assert not of(waits.commands, MarkIdle)
    assert of(placed_elsewhere.commands, MarkIdle) == [MarkIdle("small-1", T0 + 1)]


def test_pending_work_or_booting_nodes_clear_consolidation_marks_and_hold_moves():
    node, state = busy_big_node(consolidatable_since=T0)
    held = [Allocation("a100-1", 0, 10_000)]
    movable = {"a100-1": [("InferencePool ns/a", SLICE)]}
    busy = plan(
        snapshot(T0 + 600, nodes=[node], states=[state], held=held, movable=movable, joining=1),
        Batch(),
        TIMING,
    )
    assert of(busy.commands, MarkConsolidatable) == [MarkConsolidatable("a100-1", None)]
    assert not of(busy.commands, MarkReplacing) and not of(busy.commands, Disrupt)
