from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucost.core.inventory import Allocation, Ask, FreeMap
from gpucost.core.packing.policies import POLICIES
from gpucost.core.placement import NoFit, Placement, place, place_all, place_planned
from tests.builders import gpu_node


def test_best_fit_picks_the_tightest_gpu_that_fits():
    nodes = [gpu_node("a", gpus=2), gpu_node("b", gpus=1)]
    # a/0 has 30000 free, a/1 has 81920, b/0 has 25000.
    free = FreeMap.of(nodes, [Allocation("a", 0, 51920), Allocation("b", 0, 56920)])
    result = place(Ask(memory_mib=20000), nodes, free, policy="bestfit")
    assert isinstance(result, Placement)
    assert (result.node, result.gpu_indices, result.memory_mib) == ("b", (0,), 20000)
    assert result.gpu_uuids == ("GPU-b-0",)
    assert free.free[("b", 0)] == 5000


def test_default_policy_avoids_a_leftover_no_ask_can_use():
    nodes = [gpu_node("a", gpus=2), gpu_node("b", gpus=1)]
    free = FreeMap.of(nodes, [Allocation("a", 0, 51920), Allocation("b", 0, 56920)])
    # b/0 would keep 5000 MiB that no 20000 MiB replica can ever use; a/0 keeps 10000 (also
    # useless) but a/1 keeps 61920, room for three more replicas.
    result = place(Ask(memory_mib=20000), nodes, free)
    assert isinstance(result, Placement)
    assert (result.node, result.gpu_indices) == ("a", (1,))


def test_slices_fill_one_gpu_before_opening_the_next():
    nodes = [gpu_node("a", gpus=2)]
    results = place_all(Ask(memory_mib=20000), 5, nodes, FreeMap.of(nodes, []), policy="bestfit")
    assert [r.gpu_indices for r in results if isinstance(r, Placement)] == [
        (0,),
        (0,),
        (0,),
        (0,),
        (1,),
    ]


def test_whole_gpus_go_to_the_node_left_with_fewest_free_gpus():
    nodes = [gpu_node("a", gpus=8), gpu_node("b", gpus=8)]
    free = FreeMap.of(nodes, [Allocation("b", i, 81920) for i in range(5)])  # b has 3 empty GPUs
    result = place(Ask(gpus=2), nodes, free, policy="bestfit")
    assert isinstance(result, Placement)
    assert result.node == "b" and result.gpu_indices == (5, 6)
    assert result.memory_mib == 2 * 81920


def test_default_policy_keeps_idle_nodes_idle_when_it_costs_nothing():
    nodes = [gpu_node("idle", gpus=1), gpu_node("busy", gpus=1)]
    free = FreeMap.of(nodes, [Allocation("busy", 0, 20000)])
    result = place(Ask(memory_mib=20000), nodes, free)
    assert isinstance(result, Placement) and result.node == "busy"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_places_into_free_room_only(policy):
    nodes = [gpu_node("a", gpus=2)]
    free = FreeMap.of(nodes, [Allocation("a", 0, 81920)])
    result = place(Ask(memory_mib=30000), nodes, free, policy=policy)
    assert isinstance(result, Placement) and result.gpu_indices == (1,)
    assert isinstance(place(Ask(gpus=1), nodes, free, policy=policy), NoFit)


def test_whole_gpu_ask_skips_partly_used_gpus():
    nodes = [gpu_node("a", gpus=2)]
    free = FreeMap.of(nodes, [Allocation("a", 0, 100)])
    assert isinstance(place(Ask(gpus=2), nodes, free), NoFit)
    assert place(Ask(gpus=1), nodes, free).gpu_indices == (1,)


def test_whole_sharing_pool_gives_a_slice_the_entire_gpu():
    nodes = [gpu_node("a", gpus=2, shared=False)]
    free = FreeMap.of(nodes, [])
    first = place(Ask(memory_mib=1000), nodes, free)
    second = place(Ask(memory_mib=1000), nodes, free)
    third = place(Ask(memory_mib=1000), nodes, free)
    assert [first.gpu_indices, second.gpu_indices] == [(0,), (1,)]
    assert first.memory_mib == 81920
    assert isinstance(third, NoFit) and third.reason == "Unschedulable"


def test_capacity_type_model_and_pool_filters():
    spot = gpu_node("s", capacity_type="spot", pool="spot-pool")
    a10 = gpu_node("g", model="A10G", mib=23028, pool="a10-pool")
    nodes = [spot, a10]
    free = FreeMap.of(nodes, [])
    assert place(Ask(memory_mib=1000, capacity_types=frozenset({"spot"})), nodes, free).node == "s"
    assert place(Ask(memory_mib=1000, gpu_models=frozenset({"A10G"})), nodes, free).node == "g"
    miss = place(Ask(memory_mib=1000, pools=frozenset({"other"})), nodes, free)
    assert isinstance(miss, NoFit) and miss.reason == "NoMatchingGPU"


def test_unschedulable_nodes_are_never_used():
    nodes = [gpu_node("cordoned", schedulable=False)]
    result = place(Ask(memory_mib=1000), nodes, FreeMap.of(nodes, []))
    assert isinstance(result, NoFit) and result.reason == "NoMatchingGPU"


def test_no_fit_says_how_much_memory_is_missing():
    nodes = [gpu_node("a", gpus=1)]
    free = FreeMap.of(nodes, [Allocation("a", 0, 71920)])  # 10000 free
    result = place(Ask(memory_mib=30000), nodes, free)
    assert isinstance(result, NoFit)
    assert (result.reason, result.missing_mib) == ("Unschedulable", 20000)
    assert "short 20000 MiB" in result.message


def test_slice_larger_than_any_gpu_is_no_matching_gpu():
    nodes = [gpu_node("a", mib=23028)]
    result = place(Ask(memory_mib=40000), nodes, FreeMap.of(nodes, []))
    assert isinstance(result, NoFit) and result.reason == "NoMatchingGPU"


asks = st.one_of(
    st.builds(lambda m: Ask(memory_mib=m), st.integers(1, 90000)),
    st.builds(lambda k: Ask(gpus=k), st.integers(1, 9)),
)


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 8), st.sampled_from([16384, 23028, 81920]), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    stream=st.lists(asks, max_size=40),
    policy=st.sampled_from(POLICIES),
)
def test_placement_never_over_commits_any_gpu(shapes, stream, policy):
    nodes = [gpu_node(f"n{i}", gpus=g, mib=m, shared=s) for i, (g, m, s) in enumerate(shapes)]
    capacity = {(n.name, g.index): g.memory_mib for n in nodes for g in n.gpus}
    free = FreeMap.of(nodes, [])
    used: dict[tuple[str, int], int] = {}
    for ask in stream:
        result = place(ask, nodes, free, policy=policy)
        if isinstance(result, NoFit):
            continue
        per_gpu = result.memory_mib // len(result.gpu_indices)
        assert len(set(result.gpu_indices)) == len(result.gpu_indices)
        if ask.gpus:
            assert len(result.gpu_indices) == ask.gpus
        for i in result.gpu_indices:
            used[(result.node, i)] = used.get((result.node, i), 0) + per_gpu
    for key, mib in used.items():
        assert mib <= capacity[key]
        assert free.free[key] == capacity[key] - mib


def test_planned_slots_are_taken_one_each_so_no_owner_eats_another_owners_slot():
    # The plan put A on GPU 0 and GPU 1 (30 GB each) and B on GPU 0 (40 GB) of a bought node.
    slots = (("A", (0,)), ("A", (1,)), ("B", (0,)))
    node = replace(
        gpu_node("n", gpus=2), reserved_for=frozenset("AB"), reserved_until=100.0, slots=slots
    )
    free, filled_a, filled_b = FreeMap.of([node], []), Counter(), Counter()
    first = place_planned(Ask(memory_mib=30000), [node], "A", free, filled_a)
    second = place_planned(Ask(memory_mib=30000), [node], "A", free, filled_a)
    # GPU 0 still had 51 GB after A's first replica, but its A slot was filled: GPU 1 next.
    assert (first.gpu_indices, second.gpu_indices) == ((0,), (1,))
    assert place_planned(Ask(memory_mib=30000), [node], "A", free, filled_a) is None
    assert place_planned(Ask(memory_mib=40000), [node], "B", free, filled_b).gpu_indices == (0,)
    # Each slot is filled once, whoever asks: B's one slot is taken now.
    assert place_planned(Ask(memory_mib=1000), [node], "B", free, filled_b) is None


def test_an_owners_slots_stay_its_own_after_the_hold_where_the_room_is_still_free():
    slots = (("A", (0,)),)
    node = replace(
        gpu_node("n", gpus=1), reserved_for=frozenset("A"), reserved_until=100.0, slots=slots
    )
    late = place_planned(Ask(memory_mib=30000), [node], "A", FreeMap.of([node], []), Counter())
    assert late is not None and late.gpu_indices == (0,)
    taken = FreeMap.of([node], [Allocation("n", 0, 70000)])  # others filled the GPU meanwhile
    assert place_planned(Ask(memory_mib=30000), [node], "A", taken, Counter()) is None
