"""Cost split and accrual: numbers a person can check by hand."""

from __future__ import annotations

import pytest

from gpucost.core.cost import Account, Holding, accrue, advance, cost_rates
from gpucost.core.inventory import GPU, GPUNode

A100 = 81920


def node(name: str, pool: str, price: float, gpus: int) -> GPUNode:
    return GPUNode(name, pool, "on-demand", price, tuple(GPU(i, "A100", A100) for i in range(gpus)))


def test_a_shared_gpu_is_split_by_memory_and_the_rest_is_the_pools_idle_cost():
    nodes = [node("n1", "big", 8.0, 2), node("n2", "small", 1.0, 1)]
    holdings = [
        Holding("InferencePool/a/web", "n1", 0, A100 // 4),  # a quarter of GPU 0: 4.0 / 4 = 1.0
        Holding("InferencePool/a/chat", "n1", 0, A100 // 2),  # half of GPU 0: 2.0
        Holding("InferencePool/b/llm", "n1", 1, A100),  # all of GPU 1: 4.0
    ]
    rates = cost_rates(nodes, holdings)
    assert rates.workloads == {
        "InferencePool/a/web": pytest.approx(1.0),
        "InferencePool/a/chat": pytest.approx(2.0),
        "InferencePool/b/llm": pytest.approx(4.0),
    }
    assert rates.pool_idle == {
        "big": pytest.approx(1.0),
        "small": pytest.approx(1.0),
    }  # GPU 0's free quarter; n2 unused
    assert rates.pool_total == {"big": 8.0, "small": 1.0}
    # The shares add up to what the nodes cost: nothing charged twice, nothing lost.
    assert sum(rates.workloads.values()) + sum(rates.pool_idle.values()) == pytest.approx(9.0)


def test_an_over_committed_record_never_charges_more_than_the_gpu():
    rates = cost_rates(
        [node("n", "p", 2.0, 1)], [Holding("a", "n", 0, A100), Holding("b", "n", 0, A100)]
    )
    assert rates.workloads == {"a": pytest.approx(2.0), "b": pytest.approx(0.0)}
    assert rates.pool_idle == {"p": pytest.approx(0.0)}


def test_accrual_charges_the_previous_rate_for_the_time_since_the_last_accounting():
    assert accrue(10.0, 1000.0, 3.6, 1000.0 + 1800) == pytest.approx(
        11.8
    )  # half an hour at $3.60/h
    assert accrue(10.0, None, 3.6, 5000.0) == 10.0  # never accounted: starts now
    assert accrue(10.0, 5000.0, 3.6, 4000.0) == 10.0  # a clock that went back charges nothing


def test_an_account_moves_on_when_the_rate_changes_or_a_minute_passed():
    start = advance(Account(), 3.6, 1000.0)
    assert start == Account(3.6, 0.0, 1000.0)
    assert advance(start, 3.6, 1030.0) is start  # same rate, 30 s: nothing to write
    later = advance(start, 3.6, 1060.0)
    assert later == Account(3.6, pytest.approx(0.06), 1060.0)
    changed = advance(later, 7.2, 1070.0)  # the old rate is charged up to the change
    assert changed.rate == 7.2 and changed.total == pytest.approx(0.07) and changed.at == 1070.0

    idle = advance(Account(), 0.0, 1000.0)
    assert advance(idle, 0.0, 99_000.0) is idle  # a zero rate accrues nothing: no write, ever
