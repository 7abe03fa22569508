"""Consolidation plans: a busy node goes only when all of its GPU pods fit on the others, for long
enough."""

from __future__ import annotations

from gpucost.core.consolidate import CONSOLIDATION, plan_consolidation
from gpucost.core.inventory import GPU, Allocation, Ask, GPUNode
from gpucost.core.scaledown import NodePod, NodeState, PoolLimits
from gpucost.core.scaleup import Offer

NOW = 10_000.0
SLICE = Ask(memory_mib=10_000)
LIMITS = {
    "p": PoolLimits(min_nodes=0, idle_timeout_s=600, disruption_budget=1, consolidate_after_s=60)
}


def gpu_node(name: str, price: float = 1.0, mib: int = 24_000, **kw) -> GPUNode:
    return GPUNode(name, "p", "on-demand", price, (GPU(0, "L4", mib),), **kw)


def state(name: str, pods: int, **kw) -> NodeState:
    return NodeState(
        name,
        "p",
        True,
        tuple(NodePod("ns", f"{name}-{i}", uses_gpu=True) for i in range(pods)),
        **kw,
    )


def plan(nodes, states, allocs, movable, limits=LIMITS, since=None, now=NOW, offers=()):
    movable = {
        node: [(f"ns/{node}-{i}", a) for i, a in enumerate(asks)] for node, asks in movable.items()
    }
    return plan_consolidation(
        nodes,
        {s.name: s for s in states},
        allocs,
        movable,
        limits,
        since or {},
        "gpucost",
        now,
        offers,
    )


def half_used(
    *names: str,
) -> tuple[list[GPUNode], list[NodeState], list[Allocation], dict[str, list[Ask]]]:
    return (
        [gpu_node(n, price=i + 1.0) for i, n in enumerate(names)],
        [state(n, 1) for n in names],
        [Allocation(n, 0, 10_000) for n in names],
        {n: [SLICE] for n in names},
    )


def test_a_node_whose_work_fits_elsewhere_waits_consolidate_after_then_the_dearest_goes():
    nodes, states, allocs, movable = half_used("cheap", "dear")
    first = plan(nodes, states, allocs, movable)
    assert first.since == {"cheap": NOW, "dear": NOW} and first.drain is None
    later = plan(nodes, states, allocs, movable, since=first.since, now=NOW + 61)
    assert later.drain is not None and (later.drain.node, later.drain.reason) == (
        "dear",
        CONSOLIDATION,
    )
    assert "1 GPU pod(s) fit" in later.drain.message and "saving $2.00/h" in later.drain.message
    assert later.replacement is None  # a plain delete: nothing new to launch


def test_work_that_does_not_fit_elsewhere_keeps_its_node():
    nodes, states, _, movable = half_used("a", "b")
    allocs = [Allocation("a", 0, 20_000), Allocation("b", 0, 20_000)]
    movable = {"a": [Ask(memory_mib=20_000)], "b": [Ask(memory_mib=20_000)]}
    assert plan(nodes, states, allocs, movable, since={"a": 0.0, "b": 0.0}).since == {}


def test_a_gpu_pod_the_operator_did_not_place_or_a_do_not_disrupt_pod_pins_its_node():
    nodes, states, allocs, movable = half_used("a", "b")
    states[1] = NodeState(
        "b", "p", True, (NodePod("ns", "b-0", True, keep='karpenter.sh/do-not-disrupt: "true"'),)
    )
    movable["a"] = []  # a's GPU pod is a plain pod kube-scheduler placed
    assert plan(nodes, states, allocs, movable, since={"a": 0.0, "b": 0.0}).drain is None


def test_min_nodes_budget_policy_reservations_and_draining_nodes_hold():
    nodes, states, allocs, movable = half_used("a", "b")
    old = {"a": 0.0, "b": 0.0}
    at_min = {"p": PoolLimits(2, 600, 1, 60)}
    assert plan(nodes, states, allocs, movable, at_min, since=old).drain is None
    when_empty = {"p": PoolLimits(0, 600, 1, None)}
    assert plan(nodes, states, allocs, movable, when_empty, since=old).since == {}
    reserved = [
        gpu_node("a", 1.0),
        gpu_node("b", 2.0, reserved_for=frozenset({"x"}), reserved_until=NOW + 5),
    ]
    assert (
        plan(reserved, states, allocs, movable, since=old).drain is None
    )  # b is held, and a's pods can't use it
    # b is already draining: a's pods can't count on b's room, and the budget of 1 is used.
    draining = [states[0], state("b", 1, disruption="Idle")]
    cordoned = [nodes[0], gpu_node("b", 2.0, schedulable=False)]  # a drain cordons its node
    assert plan(cordoned, draining, allocs, movable, since=old).drain is None


def test_whole_gpu_pods_need_whole_free_gpus_elsewhere():
    nodes = [gpu_node("a"), gpu_node("b", price=2.0)]
    states = [state("a", 1), state("b", 1)]
    allocs = [Allocation("a", 0, 24_000), Allocation("b", 0, 10_000)]
    movable = {"a": [Ask(gpus=1)], "b": [SLICE]}
    result = plan(nodes, states, allocs, movable, since={"a": 0.0, "b": 0.0})
    assert (
        set(result.since) == set()
    )  # a's whole GPU can't share b's; b's slice can't go on a's full GPU


def test_a_dear_node_held_by_a_small_slice_is_replaced_by_a_cheaper_one():
    big = GPUNode(
        "a100", "big", "on-demand", 27.45, tuple(GPU(i, "A100", 81_920) for i in range(8))
    )
    small = GPUNode("<new small node>", "small", "on-demand", 1.0, (GPU(0, "A10G", 23_028),))
    states = [NodeState("a100", "big", True, (NodePod("ns", "web-0", uses_gpu=True),))]
    limits = {"big": LIMITS["p"]}
    offers = [Offer("small", small, headroom=5), Offer("big", big, headroom=5)]
    result = plan(
        [big],
        states,
        [Allocation("a100", 0, 10_000)],
        {"a100": [SLICE]},
        limits,
        {"a100": 0.0},
        offers=offers,
    )
    assert result.drain is not None and result.drain.node == "a100"
    assert result.replacement is not None and dict(result.replacement.launches) == {"small": 1}
    assert (
        "1 new small node(s)" in result.drain.message and "saving $26.45/h" in result.drain.message
    )
    # A whole-GPU pod needs 2 GPUs: no cheaper node holds it, so the A100 stays.
    pinned = plan(
        [big],
        states,
        [Allocation("a100", i, 81_920) for i in range(2)],
        {"a100": [Ask(gpus=2)]},
        limits,
        {"a100": 0.0},
        offers=offers,
    )
    assert pinned.drain is None
