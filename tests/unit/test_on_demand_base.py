"""A serving pool on spot with an on-demand base: its base replicas never land on spot, a rolling
update keeps the base, a scale-down removes spot replicas first, and the autoscaler buys
on-demand for exactly the base replicas that are missing."""

import pytest
from pydantic import ValidationError

from gpucost.api.inferencepool import InferencePoolSpec, InferencePoolStatus
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.core import poolplan
from gpucost.core.inventory import GPU, Ask, GPUNode
from gpucost.core.rollout import revision
from gpucost.core.snapshot import PlacedPod
from gpucost.handlers.autoscaler import pending_work
from gpucost.state.cluster import Cluster

SPEC = {
    "image": "i",
    "replicas": 4,
    "gpu": {"gpus": 1},
    "capacityTypes": ["spot", "on-demand"],
    "onDemandBase": 2,
}
ANY = Ask(gpus=1, capacity_types=frozenset({"spot", "on-demand"}))
ON_DEMAND = Ask(gpus=1, capacity_types=frozenset({"on-demand"}))
NODES = [GPUNode(f"s{i}", "spot", "spot", 0.4, (GPU(0, "A10G", 23028),)) for i in range(6)] + [
    GPUNode(f"o{i}", "on-demand", "on-demand", 1.0, (GPU(0, "A10G", 23028),)) for i in range(3)
]

POOLS = {
    kind: GPUNodePoolSpec.model_validate(
        {
            "instanceType": "g5.xlarge",
            "capacityType": kind,
            "pricePerHour": price,
            "gpu": {"model": "A10G", "memoryMiB": 23028, "count": 1},
            "cpu": "4",
            "memory": "16Gi",
            "maxNodes": 10,
        }
    )
    for kind, price in (("spot", 0.4), ("on-demand", 1.0))
}


def spec(**changes) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate(SPEC | changes)


def live(replica: int, node: str, rev: str, ready: bool = True) -> PlacedPod:
    return PlacedPod(
        f"web-{replica}", "u", replica, node, (0,), (), 1, "Running", ready, False, revision=rev
    )


def decide(s: InferencePoolSpec, mine: list[PlacedPod], nodes=NODES) -> poolplan.PoolPlan:
    pool = poolplan.Pool("web", "ns", "u", s, InferencePoolStatus(), s.replicas)
    snap = poolplan.Snapshot(
        nodes, mine, POOLS, ANY, ON_DEMAND if s.base_size(s.replicas) else None
    )
    return poolplan.decide(pool, mine, snap, 0.0, "gpucost")


def nodes_of(plan: poolplan.PoolPlan) -> dict[int, str]:
    return {replica: p.node for replica, p in plan.create}


def test_the_base_replicas_take_on_demand_and_the_rest_the_cheaper_spot():
    on = nodes_of(decide(spec(), []))
    assert sorted(n[0] for n in on.values()) == ["o", "o", "s", "s"]
    # with spot nodes only, the base waits for on-demand while the rest is placed
    plan = decide(spec(), [], NODES[:6])
    assert len(plan.create) == 2 and len(plan.unplaced) == 2
    # a pool without a base is placed whole on spot nodes
    assert len(decide(spec(onDemandBase=0), [], NODES[:6]).create) == 4


def test_the_base_is_counted_where_replicas_run_not_by_their_ordinals():
    s = spec(replicas=3, onDemandBase=1)
    rev = revision(s)
    # replica 0 runs on spot (placed before the pool had a base): a new replica is the base
    plan = decide(s, [live(0, "s0", rev), live(1, "s1", rev)], NODES[:6])
    assert not plan.create and len(plan.unplaced) == 1  # it waits for an on-demand node
    # replica 1 holds the base on on-demand: the missing replica 0 may go on spot
    plan = decide(s, [live(1, "o0", rev), live(2, "s1", rev)], NODES[:7])  # o0 is full
    assert list(nodes_of(plan)) == [0] and not plan.unplaced


def test_a_rolling_update_places_its_first_new_replica_on_the_base():
    old = spec(replicas=3, onDemandBase=1)
    pods = [live(0, "o0", revision(old)), live(1, "s0", revision(old)), live(2, "s1", "x")]
    new = spec(replicas=3, onDemandBase=1, image="j")
    # the surge replica takes the next free ordinal, 3; it is the new revision's base all the same
    assert nodes_of(decide(new, pods))[3].startswith("o")
    plan = decide(new, pods, NODES[:7])  # o0 is full
    assert not plan.create and len(plan.unplaced) == 1  # it waits for an on-demand node


def test_a_scale_down_removes_spot_replicas_before_the_base():
    s = spec(replicas=1, onDemandBase=1)
    rev = revision(s)
    # after a rollout the base may hold the highest ordinal; the default victim order would take it
    pods = [live(1, "s0", rev), live(2, "s1", rev), live(3, "o0", rev)]
    assert decide(s, pods).delete == ("web-1", "web-2")
    assert decide(spec(replicas=1, onDemandBase=0), pods).delete == ("web-2", "web-3")


def test_the_autoscaler_buys_on_demand_only_for_the_missing_base_replicas():
    rev = revision(spec())

    def asks(*pods: PlacedPod) -> dict[tuple[str, ...], int]:
        body = {
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": SPEC,
            "status": {"unplacedReplicas": 4 - len(pods)},
        }
        cluster = Cluster({}, NODES, list(pods), {}, [], {})
        return {
            tuple(sorted(p.ask.capacity_types)): p.count for p in pending_work([body], cluster, [])
        }

    assert asks(live(2, "s0", rev)) == {("on-demand",): 2, ("on-demand", "spot"): 1}
    assert asks(live(3, "o0", rev)) == {("on-demand",): 1, ("on-demand", "spot"): 2}
    # an older revision's replica on on-demand is not the base of the one being rolled out
    assert asks(live(3, "o0", "old")) == {("on-demand",): 2, ("on-demand", "spot"): 1}


def test_a_base_needs_on_demand_among_the_capacity_types():
    with pytest.raises(ValidationError, match="onDemandBase needs on-demand"):
        spec(capacityTypes=["spot"])
    assert spec().base_size(4) == 2 and spec().base_size(1) == 1
    # on-demand only: every replica is on-demand anyway, the base changes nothing
    assert spec(capacityTypes=["on-demand"]).base_size(4) == 0
