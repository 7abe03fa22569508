"""What GPUs cost per hour, split the way a shared GPU is actually used.

A node costs its pool's $/hour while it exists; that is split evenly over its GPUs, and each
GPU's share among the workloads on it by the memory they hold (a whole GPU holds all of it).
What nobody holds is the pool's idle cost. OpenCost charges a shared GPU as a whole GPU to every
pod on it (their issue #3828): here the shares add up to exactly the node's price.

Accumulated cost is a left Riemann sum: the rate that was in effect since the last accounting
times the time since then, so a restart (or a slow resync) keeps counting from the status it finds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpucost.core.inventory import GPUNode


@dataclass(frozen=True)
class Holding:
    workload: str
    """``Kind/namespace/name`` (names.workload)."""
    node: str
    gpu_index: int
    memory_mib: int


@dataclass
class CostRates:
    workloads: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """$/hour per workload."""
    pool_idle: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """$/hour of what no workload holds, per pool."""
    pool_total: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """$/hour of every node of the pool: workloads' shares plus idle."""


def cost_rates(nodes: Sequence[GPUNode], holdings: Sequence[Holding]) -> CostRates:
    by_gpu: dict[tuple[str, int], list[Holding]] = defaultdict(list)
    for h in holdings:
        by_gpu[(h.node, h.gpu_index)].append(h)
    rates = CostRates()
    for node in nodes:
        rates.pool_total[node.pool] += node.price_per_hour
        if not node.gpus:
            rates.pool_idle[node.pool] += node.price_per_hour
            continue
        per_gpu = node.price_per_hour / len(node.gpus)
        for gpu in node.gpus:
            held = 0
            for h in by_gpu.get((node.name, gpu.index), ()):
                # Never more than the GPU: an over-committed record can't charge above the price.
                mib = min(h.memory_mib, gpu.memory_mib - held)
                rates.workloads[h.workload] += per_gpu * mib / gpu.memory_mib
                held += mib
            rates.pool_idle[node.pool] += per_gpu * (gpu.memory_mib - held) / gpu.memory_mib
    return rates


def accrue(total: float, since: float | None, rate_per_hour: float, now: float) -> float:
    """``total`` accounted up to ``since`` (epoch seconds), plus ``rate_per_hour`` until ``now``."""
    if since is None or now <= since:
        return total
    return total + rate_per_hour * (now - since) / 3600


@dataclass(frozen=True)
class Account:
    """One running cost as kept in a status: the rate now, the total so far, and when."""

    rate: float = 0.0
    total: float = 0.0
    at: float | None = None


def advance(old: Account, rate: float, now: float, every: float = 60.0) -> Account:
    """Charge the old rate up to now and take the new one. While the rate holds, the total moves on
    only every ``every`` seconds (one status write a minute, not one per reconcile), and never
    while it is zero: nothing accrues, so an unplaceable pool's status stays still."""
    if (
        old.at is not None
        and abs(rate - old.rate) < 1e-9
        and (old.rate == 0 or now - old.at < every)
    ):
        return old
    return Account(rate, accrue(old.total, old.at, old.rate, now), now)
