"""A serving pool on spot with an on-demand base: its first replicas never land on spot, and the
autoscaler buys on-demand for exactly the base replicas that are missing."""

from gpucost.api.inferencepool import InferencePoolSpec, InferencePoolStatus
from gpucost.core import poolplan
from gpucost.core.inventory import GPU, Ask, GPUNode
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


def node(name: str, capacity: str, price: float) -> GPUNode:
    return GPUNode(name, capacity, capacity, price, (GPU(0, "A10G", 23028),))


def live(replica: int) -> PlacedPod:
    return PlacedPod(f"web-{replica}", "u", replica, "s1", (0,), (), 1, "Running", True, False)


def test_the_base_replicas_take_on_demand_and_the_rest_the_cheaper_spot():
    spec = InferencePoolSpec.model_validate(SPEC)
    nodes = [node(f"s{i}", "spot", 0.4) for i in range(4)] + [
        node(f"o{i}", "on-demand", 1.0) for i in range(2)
    ]
    pool = poolplan.Pool("web", "ns", "u", spec, InferencePoolStatus(), 4)
    spot_or_od = Ask(gpus=1, capacity_types=frozenset({"spot", "on-demand"}))
    snap = poolplan.Snapshot(
        nodes, [], {}, spot_or_od, Ask(gpus=1, capacity_types=frozenset({"on-demand"}))
    )
    placed, unplaced = poolplan.place_replicas(pool, [], snap, [0, 1, 2, 3], 0.0, "gpucost")
    on = {replica: p.node for replica, p in placed}
    assert not unplaced and {on[0][0], on[1][0]} == {"o"} and {on[2][0], on[3][0]} == {"s"}
    # with spot nodes only, the base waits for on-demand while the rest is placed
    spot_only = poolplan.Snapshot(nodes[:4], [], {}, spot_or_od, snap.base_ask)
    placed, unplaced = poolplan.place_replicas(pool, [], spot_only, [0, 1, 2, 3], 0.0, "gpucost")
    assert [replica for replica, _ in placed] == [2, 3] and len(unplaced) == 2
    # a pool without a base takes the spot nodes for all four
    plain = poolplan.Pool("web", "ns", "u", spec.model_copy(update={"on_demand_base": 0}),
                          InferencePoolStatus(), 4)  # fmt: skip
    spot_only = poolplan.Snapshot(nodes[:4], [], {}, spot_or_od)
    placed, unplaced = poolplan.place_replicas(plain, [], spot_only, [0, 1, 2, 3], 0.0, "gpucost")
    assert len(placed) == 4 and not unplaced


def test_the_autoscaler_buys_on_demand_only_for_the_missing_base_replicas():
    body = {
        "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
        "spec": SPEC,
        "status": {"unplacedReplicas": 3},
    }
    cluster = Cluster({}, [], [live(2)], {}, [], {})  # replica 2 runs; 0, 1 and 3 are missing
    asks = {tuple(sorted(p.ask.capacity_types)): p.count for p in pending_work([body], cluster, [])}
    assert asks == {("on-demand",): 2, ("on-demand", "spot"): 1}
    cluster = Cluster({}, [], [live(0)], {}, [], {})  # base replica 0 runs: one base missing
    asks = {tuple(sorted(p.ask.capacity_types)): p.count for p in pending_work([body], cluster, [])}
    assert asks == {("on-demand",): 1, ("on-demand", "spot"): 2}


def test_a_base_needs_on_demand_among_the_capacity_types():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="onDemandBase needs on-demand"):
        InferencePoolSpec.model_validate(SPEC | {"capacityTypes": ["spot"]})
    # on-demand only: every replica is on-demand anyway, the base changes nothing
    plain = InferencePoolSpec.model_validate(SPEC | {"capacityTypes": ["on-demand"]})
    assert not plain.on_demand_only(0)
