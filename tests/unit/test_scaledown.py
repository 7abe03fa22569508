"""Scale-down plans: idle timeout, minNodes, disruption budget, do-not-disrupt, spot reclaim."""

from __future__ import annotations

from gpucost.core.scaledown import (
    IDLE,
    INTERRUPTED,
    UNDERUTILIZED,
    NodePod,
    NodeState,
    PoolLimits,
    plan_scale_down,
)

LIMITS = {"p": PoolLimits(min_nodes=1, idle_timeout_s=600, disruption_budget=1)}
NOW = 10_000.0
GPU_POD = NodePod("ns", "replica-0", uses_gpu=True)


def node(name: str, *pods: NodePod, since: float | None = None, **kw) -> NodeState:
    return NodeState(
        name=name, pool="p", ready=kw.pop("ready", True), pods=pods, idle_since=since, **kw
    )


def test_idle_marks_start_and_clear():
    plan = plan_scale_down(
        [node("a"), node("b", GPU_POD, since=NOW - 5), node("c", ready=False)], LIMITS, NOW
    )
    assert plan.idle_since == {"a": NOW, "b": None}
    assert not plan.drain


def test_only_nodes_idle_past_the_timeout_go_oldest_first_within_budget():
    nodes = [
        node("busy", GPU_POD),
        node("new", since=NOW - 60),
        node("old", since=NOW - 900),
        node("older", since=NOW - 1200),
    ]
    plan = plan_scale_down(nodes, LIMITS, NOW)
    assert [(d.node, d.reason) for d in plan.drain] == [("older", IDLE)]
    assert "disruptionBudget 1" in plan.kept["old"]


def test_never_below_min_nodes():
    plan = plan_scale_down(
        [node("a", since=0.0), node("b", since=0.0)], {"p": PoolLimits(2, 600, 5)}, NOW
    )
    assert not plan.drain and set(plan.kept) == {"a", "b"}


def test_do_not_disrupt_pods_keep_their_node_but_non_gpu_pods_do_not():
    keeper = NodePod("ns", "notebook", uses_gpu=False, keep='karpenter.sh/do-not-disrupt: "true"')
    plain = NodePod("ns", "sidecar", uses_gpu=False)
    daemon = NodePod("kube-system", "exporter", uses_gpu=True, daemon=True)
    nodes = [
        node("kept", keeper, since=0.0),
        node("gone", plain, daemon, since=1.0),
        node("spare", since=NOW),
    ]
    plan = plan_scale_down(nodes, {"p": PoolLimits(0, 600, 5)}, NOW)
    assert [d.node for d in plan.drain] == ["gone"]
    assert "ns/notebook" in plan.kept["kept"] and "do-not-disrupt" in plan.kept["kept"]


def test_reclaimed_spot_nodes_drain_at_once_whatever_the_budget_and_count_against_it():
    nodes = [
        node("spot", GPU_POD, interrupted=True),
        node("idle", since=0.0),
        node("other", since=0.0),
    ]
    plan = plan_scale_down(nodes, {"p": PoolLimits(0, 600, 1)}, NOW)
    assert [(d.node, d.reason) for d in plan.drain] == [("spot", INTERRUPTED)]
    assert "being removed" in plan.kept["idle"]


def test_nodes_already_draining_are_not_started_again():
    plan = plan_scale_down(
        [node("a", since=0.0, disruption=IDLE)], {"p": PoolLimits(0, 600, 1)}, NOW
    )
    assert not plan.drain


def test_a_busy_node_under_the_utilization_threshold_for_the_whole_timeout_is_idle_too():
    limits = {"p": PoolLimits(0, 600, 5, idle_utilization_pct=10)}
    nodes = [
        node("quiet", GPU_POD, utilization_pct=3.0),
        node("working", GPU_POD, utilization_pct=55.0),
        node("unknown", GPU_POD),  # no series in Prometheus: allocation decides, and it is busy
    ]
    plan = plan_scale_down(nodes, limits, NOW)
    assert [(d.node, d.reason) for d in plan.drain] == [("quiet", UNDERUTILIZED)]
    assert (
        "peaked at 3%" in plan.drain[0].message
        and "idleUtilizationPercent 10" in plan.drain[0].message
    )
    off = plan_scale_down(nodes, {"p": PoolLimits(0, 600, 5)}, NOW)  # the pool did not ask
    assert not off.drain


def test_a_bought_node_is_held_only_while_the_work_it_was_bought_for_waits():
    def hold(*owners: str) -> NodeState:
        return node("new", reserved_for=frozenset(owners), reserved_until=NOW + 60)

    waiting = plan_scale_down([hold("pool-a")], LIMITS, NOW, {"pool-a"})
    landed = plan_scale_down([hold("pool-a")], LIMITS, NOW, {"pool-b"})
    nobody = plan_scale_down([hold()], LIMITS, NOW, {"pool-b"})
    over = plan_scale_down(
        [node("new", reserved_for=frozenset({"pool-a"}), reserved_until=NOW)],
        LIMITS,
        NOW,
        {"pool-a"},
    )
    assert waiting.idle_since == {} and nobody.idle_since == {}  # a hold naming nobody keeps time
    assert landed.idle_since == {"new": NOW} and over.idle_since == {"new": NOW}
