"""Capacity paid for whether it is used or not: reserved nodes and $/hour commitments.

A reserved pool (RIs, ODCRs, capacity blocks) pays for ``reserved`` nodes every hour; running one
of them costs nothing more, so the next node there is free to choose and an idle one saves
nothing when removed. A commitment (a Savings Plan) pays ``usd_per_hour`` every hour and in
return bills the pool's nodes at ``covered_price`` until that amount is used; nodes beyond it pay
the list price. Both make the pool's *effective* price differ from its list price, and an unused
commitment is money spent for nothing, which is what the pool's status warns about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpucost.api.common import epoch
from gpucost.api.nodepool import GPUNodePoolSpec


@dataclass(frozen=True)
class Commitment:
    usd_per_hour: float
    covered_price: float
    """What one node-hour of the pool costs under the commitment (the Savings Plan rate)."""
    term_end: float | None = None

    def active(self, now: float) -> bool:
        return self.term_end is None or now < self.term_end


@dataclass(frozen=True)
class Bill:
    cost_per_hour: float
    """What the pool's nodes cost this hour, paid-for-anyway capacity included."""
    effective_price: float | None
    """cost_per_hour per running node; None with no node running."""
    utilization: float | None
    """Share of the reservation or commitment in use; None when the pool has neither."""
    unused_per_hour: float = 0.0
    """Paid for this hour and used by nothing: reserved nodes not running, commitment not used."""


def bill(
    nodes: int,
    price: float,
    now: float,
    reserved: int | None = None,
    commitment: Commitment | None = None,
) -> Bill:
    if reserved is not None:
        cost = max(nodes, reserved) * price
        used = min(nodes, reserved) / reserved
        unused = max(reserved - nodes, 0) * price
    elif commitment is not None and commitment.active(now):
        covered = nodes * commitment.covered_price
        beyond = max(covered - commitment.usd_per_hour, 0.0) / commitment.covered_price
        cost = commitment.usd_per_hour + beyond * price
        used = min(covered / commitment.usd_per_hour, 1.0)
        unused = max(commitment.usd_per_hour - covered, 0.0)
    else:
        cost, used, unused = nodes * price, None, 0.0
    return Bill(cost, cost / nodes if nodes else None, used, unused)


def marginal_price(
    nodes: int,
    price: float,
    now: float,
    reserved: int | None = None,
    commitment: Commitment | None = None,
) -> float:
    """What one more node adds to the bill: nothing while it is reserved or committed anyway.
    (A node that is only partly covered counts at the list price's uncovered share.)"""
    before = bill(nodes, price, now, reserved, commitment).cost_per_hour
    return bill(nodes + 1, price, now, reserved, commitment).cost_per_hour - before


def of_spec(spec: GPUNodePoolSpec) -> Commitment | None:
    c = spec.commitment
    if c is None:
        return None
    return Commitment(c.usd_per_hour, c.covered_price_per_hour, epoch(c.term_end))


def pool_bill(spec: GPUNodePoolSpec, nodes: int, price: float, now: float) -> Bill:
    return bill(nodes, price, now, spec.reserved_nodes, of_spec(spec))


def pool_marginal(spec: GPUNodePoolSpec, nodes: int, price: float, now: float) -> float | None:
    """The next node's price where capacity is paid for in advance; None otherwise."""
    if spec.reserved_nodes is None and spec.commitment is None:
        return None
    return marginal_price(nodes, price, now, spec.reserved_nodes, of_spec(spec))


def bought_at_list_price(
    name: str,
    spec: GPUNodePoolSpec,
    pools: Mapping[str, GPUNodePoolSpec],
    nodes: Mapping[str, int],
) -> tuple[str, ...]:
    """The other pools running on-demand nodes at list price in this pool's instance family
    (what an EC2 Instance Savings Plan or a reservation of the family could have covered), each
    as "name (N nodes)"."""
    family = spec.instance_type.split(".")[0]
    return tuple(
        f"{other} ({count} nodes)"
        for other, p in sorted(pools.items())
        if other != name
        and p.capacity_type == "on-demand"
        and p.commitment is None
        and p.instance_type.split(".")[0] == family
        and (count := nodes.get(other, 0))
    )
