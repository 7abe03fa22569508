"""The one 'can this node take a pod now' rule, and which placed pods must be placed again."""

from __future__ import annotations

import pytest

from gpucost import names
from gpucost.core.refusal import (
    SCHEDULER_GRACE_SECONDS,
    catching_up,
    node_refusal,
    stranded,
    tolerates,
)
from gpucost.core.snapshot import PlacedPod, gpu_node
from tests.builders import pool_spec

POOL_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
NOW = 1_000.0


def node(name="n1", ready="True", unschedulable=False, taints=(), annotations=None, deleting=False):
    meta = {"name": name, "labels": {names.LABEL_NODEPOOL: "p"}, "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"unschedulable": unschedulable, "taints": list(taints)},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def test_a_ready_node_with_only_tolerated_taints_takes_pods():
    assert node_refusal(node(taints=[POOL_TAINT]), [POOL_TAINT]) is None
    assert node_refusal(node(taints=[{"key": "x", "effect": "PreferNoSchedule"}])) is None
    # Turned Ready a moment ago: the node lifecycle controller has not lifted its taint yet.
    lagging = node(taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])
    assert node_refusal(lagging) is None
    # Karpenter's node, Ready a moment before Karpenter registered it and lifted its own taint.
    joining = node(taints=[{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}])
    assert node_refusal(joining) is None


@pytest.mark.parametrize(
    "obj, why",
    [
        (node(ready="False"), "node n1 is not Ready"),
        (node(ready="Unknown"), "node n1 is not Ready"),
        (node(unschedulable=True), "node n1 is cordoned"),
        (node(deleting=True), "node n1 is being deleted"),
        (
            node(annotations={names.ANNOTATION_DISRUPTION: "Idle"}),
            "node n1 is being drained (Idle)",
        ),
        (
            node(
                taints=[
                    {"key": "gpucost.dev/interruption", "value": "reclaim", "effect": "NoSchedule"}
                ]
            ),
            "node n1 has the taint gpucost.dev/interruption=reclaim:NoSchedule",
        ),
        (
            node(taints=[{"key": "aws-node-termination-handler/spot-itn", "effect": "NoExecute"}]),
            "node n1 has the taint aws-node-termination-handler/spot-itn:NoExecute",
        ),
        (
            node(taints=[{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]),
            "node n1 has the taint karpenter.sh/disrupted:NoSchedule",
        ),
        (
            node(
                ready="Unknown",
                taints=[
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                    POOL_TAINT,
                ],
            ),
            "node n1 is not Ready",
        ),
    ],
)
def test_a_node_that_is_going_or_refuses_the_pod_says_why_naming_itself(obj, why):
    assert node_refusal(obj, [POOL_TAINT]) == why


def test_toleration_matching_is_kubernetes_own():
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert tolerates(
        [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}], taint
    )
    assert tolerates([{"key": "k", "operator": "Exists"}], taint)
    assert tolerates([{"operator": "Exists"}], taint)
    assert not tolerates([{"key": "k", "value": "other"}], taint)
    assert not tolerates([{"key": "k", "operator": "Exists", "effect": "NoExecute"}], taint)


def test_the_placer_sees_the_same_rule():
    """snapshot.gpu_node (what placement, scale-up and consolidation read) uses node_refusal
    with the pool's taints as the pods' tolerations."""
    spec = pool_spec(taints=[POOL_TAINT])
    assert gpu_node(node(taints=[POOL_TAINT]), {"p": spec}).schedulable
    reclaimed = node(
        taints=[
            POOL_TAINT,
            {"key": "gpucost.dev/interruption", "value": "r", "effect": "NoSchedule"},
        ]
    )
    assert not gpu_node(reclaimed, {"p": spec}).schedulable
    assert not gpu_node(
        node(annotations={names.ANNOTATION_DISRUPTION: "Consolidation"}), {"p": spec}
    ).schedulable


def pod(
    name="web-0",
    node="n1",
    phase="Pending",
    bound=False,
    deleting=False,
    refused_at=None,
    message="",
):
    return PlacedPod(
        name,
        "u",
        int(name.rsplit("-", 1)[1]),
        node,
        (0,),
        (),
        1000,
        phase,
        phase == "Running",
        deleting,
        bound,
        refused_at,
        message,
    )


def test_pods_pinned_to_a_gone_or_refusing_node_are_stranded():
    refusals = {"ok": None, "cordoned": "node cordoned is cordoned"}
    pods = [
        pod("web-0", "ok"),
        pod("web-1", "gone"),
        pod("web-2", "cordoned"),
        pod("web-3", "gone", phase="Running", bound=True),
        pod("web-4", "gone", bound=True, deleting=True),
    ]
    assert stranded(pods, refusals, NOW) == {
        "web-1": "node gone no longer exists",
        "web-2": "node cordoned is cordoned",
        "web-3": "node gone no longer exists",  # no kubelet left to run it or to confirm it stopped
        "web-4": "node gone no longer exists",
    }


def test_a_bound_pod_leaves_a_going_node_through_the_drain_not_here():
    refusals = {"draining": "node draining is being drained (SpotInterruption)"}
    assert stranded([pod(node="draining", phase="Running", bound=True)], refusals, NOW) == {}


def test_finished_and_terminating_pods_are_left_alone():
    refusals = {"cordoned": "node cordoned is cordoned"}
    assert (
        stranded(
            [pod(node="gone", phase="Succeeded"), pod("web-1", "cordoned", deleting=True)],
            refusals,
            NOW,
        )
        == {}
    )


def test_a_lasting_scheduler_refusal_strands_the_pod_a_fresh_one_does_not():
    refusals = {"n1": None}
    fresh = pod(
        refused_at=NOW - SCHEDULER_GRACE_SECONDS + 1,
        message="0/3 nodes are available: 1 Insufficient cpu",
    )
    lasting = pod(
        "web-1",
        refused_at=NOW - SCHEDULER_GRACE_SECONDS,
        message="0/3 nodes are available: 1 Insufficient cpu",
    )
    assert stranded([fresh, lasting], refusals, NOW) == {
        "web-1": "kube-scheduler will not bind it to node n1: "
        "0/3 nodes are available: 1 Insufficient cpu"
    }


def test_a_refusal_by_a_ready_node_still_lifting_its_not_ready_taint_is_waited_out():
    lasting = pod(
        refused_at=NOW - 60, message="0/3 nodes are available: 1 node(s) had untolerated taint(s)"
    )
    refusals = {"n1": None}
    assert stranded([lasting], refusals, NOW, catching={"n1"}) == {}
    assert set(stranded([lasting], refusals, NOW)) == {lasting.name}
    ready = {"type": "Ready", "status": "True"}
    node = {
        "metadata": {"name": "n1"},
        "status": {"conditions": [ready]},
        "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
    }
    assert catching_up(node)
    assert not catching_up({**node, "spec": {}})
    assert not catching_up({**node, "status": {"conditions": [{**ready, "status": "False"}]}})
