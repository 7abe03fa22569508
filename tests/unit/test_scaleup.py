"""Scale-up plans: cheapest fitting pools, spot only for interruptible work, capacity in flight."""

from __future__ import annotations

from gpucost.core.inventory import Allocation, Ask
from gpucost.core.scaleup import Offer, Pending, plan_scale_up
from tests.builders import gpu_node

SPOT_A10G = gpu_node(
    "t-spot", gpus=1, mib=23028, model="A10G", pool="a10g-spot", capacity_type="spot"
)
OD_A10G = gpu_node("t-od", gpus=1, mib=23028, model="A10G", pool="a10g-od")
OD_A100 = gpu_node("t-a100", gpus=8, mib=81920, model="A100", pool="a100-od")


def offer(template, price: float, headroom: int = 10) -> Offer:
    from dataclasses import replace

    return Offer(template.pool, replace(template, price_per_hour=price), headroom)


OFFERS = [offer(SPOT_A10G, 0.39), offer(OD_A10G, 1.01), offer(OD_A100, 27.45)]
BOTH = frozenset({"spot", "on-demand"})


def test_interruptible_slices_go_to_the_cheapest_spot_nodes():
    plan = plan_scale_up([Pending("web", Ask(memory_mib=10000, capacity_types=BOTH), 5)], OFFERS)
    assert plan.launches == {"a10g-spot": 3}  # two 10 GB slices per 23 GB A10G
    assert plan.on_new["a10g-spot"]["web"] == 5 and not plan.unfit
    assert plan.cost_per_hour(OFFERS) == 3 * 0.39


def test_non_interruptible_work_never_lands_on_spot():
    plan = plan_scale_up([Pending("db", Ask(memory_mib=10000), 2)], OFFERS)
    assert plan.launches == {"a10g-od": 1}


def test_big_asks_open_the_pool_that_holds_them_and_small_ones_share_it():
    pending = [Pending("llm", Ask(gpus=4), 1), Pending("emb", Ask(memory_mib=5000), 3)]
    plan = plan_scale_up(pending, OFFERS)
    # The A100 node opened for the 4-GPU ask has room for the slices: no A10G is bought for them.
    assert plan.launches == {"a100-od": 1}
    assert plan.on_new["a100-od"] == {"llm": 1, "emb": 3}


def test_booting_and_existing_room_is_used_before_buying():
    booting = [
        gpu_node(
            "boot-0",
            gpus=1,
            mib=23028,
            model="A10G",
            pool="a10g-spot",
            capacity_type="spot",
            schedulable=False,
        )
    ]
    existing = [
        gpu_node("run-0", gpus=1, mib=23028, model="A10G", pool="a10g-spot", capacity_type="spot")
    ]
    held = [Allocation("run-0", 0, 13028)]
    plan = plan_scale_up(
        [Pending("web", Ask(memory_mib=10000, capacity_types=BOTH), 4)],
        OFFERS,
        existing,
        held,
        booting,
    )
    assert plan.on_existing["web"] == 3  # 1 beside the running one, 2 on the booting node
    assert plan.launches == {"a10g-spot": 1}


def test_max_nodes_caps_a_pool_and_the_rest_goes_to_the_next_cheapest():
    offers = [offer(SPOT_A10G, 0.39, headroom=2), offer(OD_A10G, 1.01), offer(OD_A100, 27.45)]
    plan = plan_scale_up([Pending("web", Ask(memory_mib=20000, capacity_types=BOTH), 3)], offers)
    assert plan.launches == {"a10g-spot": 2, "a10g-od": 1}


def test_work_no_pool_can_hold_is_reported_not_bought_for():
    plan = plan_scale_up(
        [
            Pending("huge", Ask(gpus=16), 1),
            Pending("capped", Ask(memory_mib=20000, pools=frozenset({"a10g-od"})), 2),
        ],
        [offer(SPOT_A10G, 0.39), offer(OD_A10G, 1.01, headroom=1), offer(OD_A100, 27.45)],
    )
    assert plan.launches == {"a10g-od": 1}
    assert "can ever hold" in plan.unfit["huge"]
    assert "maxNodes" in plan.unfit["capped"] and "a10g-od" in plan.unfit["capped"]


def test_whole_gpu_asks_take_the_cheapest_gpu_not_the_biggest():
    plan = plan_scale_up([Pending("train", Ask(gpus=1), 2)], OFFERS)
    assert plan.launches == {"a10g-od": 2}


def test_a_booting_node_reserved_for_other_work_is_not_counted_on():
    from dataclasses import replace

    reserved = replace(
        gpu_node("boot-0", gpus=1, mib=23028, model="A10G", pool="a10g-od", schedulable=False),
        reserved_for=frozenset({"db"}),
        reserved_until=100.0,
    )
    pending = [Pending("web", Ask(memory_mib=20000), 1)]
    assert plan_scale_up(pending, OFFERS, booting=[reserved], now=50.0).launches == {"a10g-od": 1}
    assert plan_scale_up(pending, OFFERS, booting=[reserved], now=150.0).on_existing == {"web": 1}


def test_every_ask_is_held_exactly_once_after_redundant_nodes_are_dropped():
    # A mix where the dropping pass runs more than once (the bench's burst found asks counted
    # twice).
    pending = [
        Pending("chat-7b", Ask(memory_mib=16000, capacity_types=BOTH), 20),
        Pending("embed", Ask(memory_mib=5000, capacity_types=BOTH), 15),
        Pending("rerank", Ask(memory_mib=8000), 10),
        Pending("chat-13b", Ask(memory_mib=30000), 10),
        Pending("asr", Ask(memory_mib=10000), 10),
        Pending("chat-34b", Ask(memory_mib=40000), 8),
        Pending("batch", Ask(memory_mib=20000, capacity_types=BOTH), 7),
        Pending("vision", Ask(memory_mib=12000, capacity_types=BOTH), 10),
        Pending("ft", Ask(gpus=1, capacity_types=BOTH), 5),
        Pending("chat-70b", Ask(gpus=2), 5),
    ]
    plan = plan_scale_up(pending, OFFERS)
    held = sum(sum(owners.values()) for owners in plan.on_new.values())
    assert held == sum(p.count for p in pending) and not plan.unfit
    for p in pending:
        assert sum(owners[p.owner] for owners in plan.on_new.values()) == p.count
