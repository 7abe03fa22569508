"""Capacity paid for in advance: reserved nodes and commitments, billed, ranked, kept and
reported."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.core.autoscale import pool_view
from gpucost.core.commitment import Commitment, bill, bought_at_list_price, marginal_price
from gpucost.core.inventory import Ask
from gpucost.core.scaledown import NodeState, plan_scale_down
from gpucost.core.scaleup import Offer, Pending, plan_scale_up
from gpucost.handlers.nodepool import unused_condition


def spec(**kw) -> GPUNodePoolSpec:
    base = {
        "instanceType": "p4d.24xlarge",
        "capacityType": "on-demand",
        "pricePerHour": 20.0,
        "gpu": {"model": "A100", "memoryMiB": 81920, "count": 8},
        "cpu": "96",
        "memory": "1152Gi",
        "maxNodes": 10,
    }
    return GPUNodePoolSpec.model_validate({**base, **kw})


def test_reserved_nodes_are_paid_whether_they_run_or_not():
    one = bill(1, 2.0, 0.0, reserved=3)
    assert (one.cost_per_hour, one.effective_price, one.unused_per_hour) == (6.0, 6.0, 4.0)
    assert one.utilization == pytest.approx(1 / 3)
    full = bill(3, 2.0, 0.0, reserved=3)
    assert (full.cost_per_hour, full.effective_price, full.utilization) == (6.0, 2.0, 1.0)
    assert marginal_price(1, 2.0, 0.0, reserved=3) == 0.0  # the second reserved node is free


def test_a_commitment_covers_nodes_at_its_rate_and_the_rest_pay_list_price():
    plan = Commitment(usd_per_hour=10.0, covered_price=0.6, term_end=100.0)
    under = bill(10, 1.0, 0.0, commitment=plan)  # 6 $/h of 10 used
    assert under.cost_per_hour == 10.0 and under.utilization == pytest.approx(0.6)
    assert under.unused_per_hour == pytest.approx(4.0)
    assert marginal_price(10, 1.0, 0.0, commitment=plan) == 0.0
    over = bill(20, 1.0, 0.0, commitment=plan)  # 12 $/h at the rate: 2 $/h of it at list
    assert over.cost_per_hour == pytest.approx(10.0 + 2.0 / 0.6)
    assert marginal_price(20, 1.0, 0.0, commitment=plan) == pytest.approx(1.0)
    assert bill(10, 1.0, 100.0, commitment=plan).cost_per_hour == 10.0 * 1.0  # term ended


def test_a_reserved_pool_ranks_free_is_capped_at_its_reservation_and_keeps_idle_nodes():
    reserved = spec(capacityType="reserved", reservedNodes=2, pricePerHour=30.0)
    view = pool_view("ri", reserved, nodes=1, joining=0)
    assert view.expected_price == 0.0 and view.max_nodes == 2 and view.limits.min_nodes == 2
    assert pool_view("ri", reserved, nodes=2, joining=0).max_nodes == 2
    idle = NodeState("ri-0", "ri", ready=True, pods=(), idle_since=0.0)  # idle for days
    kept = plan_scale_down([idle], {"ri": view.limits}, now=1e6)
    assert not kept.drain and "minNodes 2" in kept.kept["ri-0"]


def test_on_demand_and_spot_work_go_to_reserved_nodes_before_anything_is_bought():
    reserved = pool_view(
        "ri", spec(capacityType="reserved", reservedNodes=2, pricePerHour=30.0), 0, 0
    )
    cheap = pool_view("od", spec(pricePerHour=20.0), 0, 0)
    offers = [
        Offer("ri", reserved.template, 2, reserved.expected_price),
        Offer("od", cheap.template, 10, cheap.expected_price),
    ]
    for kinds in ({"on-demand"}, {"spot"}):
        ask = Pending("job", Ask(gpus=8, capacity_types=frozenset(kinds)))
        assert plan_scale_up([ask], offers).launches == {"ri": 1}


def test_an_unused_commitment_is_flagged_only_while_on_demand_is_bought_elsewhere():
    paid = bill(2, 1.0, 0.0, commitment=Commitment(10.0, 0.6))
    (flagged,) = unused_condition([], paid, ("od (3 nodes)",), 1)
    assert flagged.status == "True" and "od (3 nodes)" in flagged.message
    assert "$8.80/h" in flagged.message
    (calm,) = unused_condition([], paid, (), 1)
    assert calm.status == "False"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"capacityType": "reserved"}, "reservedNodes is set exactly"),
        ({"reservedNodes": 2}, "reservedNodes is set exactly"),
        (
            {"capacityType": "spot", "commitment": {"usdPerHour": 1, "coveredPricePerHour": 1}},
            "a commitment covers on-demand nodes only",
        ),
    ],
)
def test_reservation_and_commitment_fields_only_where_they_mean_something(extra, message):
    with pytest.raises(ValidationError, match=message):
        spec(**extra)


def test_only_on_demand_at_list_price_in_the_same_family_counts_as_bought_elsewhere():
    committed = spec(commitment={"usdPerHour": 10.0, "coveredPricePerHour": 12.0})
    pools = {
        "plan": committed,
        "od": spec(),  # p4d, on-demand, list price: counts
        "other-family": spec(instanceType="g5.xlarge"),
        "spot": spec(capacityType="spot"),
        "also-committed": committed,
        "empty": spec(),
    }
    nodes = {"plan": 0, "od": 3, "other-family": 2, "spot": 2, "also-committed": 1}
    assert bought_at_list_price("plan", committed, pools, nodes) == ("od (3 nodes)",)
