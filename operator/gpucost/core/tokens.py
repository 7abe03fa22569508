"""$ per million generated tokens: what serving cost over a window divided by what it produced.

Both come from the same window (Prometheus' ``increase`` of the token counter and the integral of
the pool's $/hour), so a pool that scaled to zero for part of it is charged for what it ran, and a
pool that produced nothing has no figure rather than an infinite one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    tokens: float
    cost: float
    """USD over the same window."""
    source: str = ""
    """Where the token count came from: the gateway, or the replicas' vLLM metrics."""

    @property
    def usd_per_million(self) -> float | None:
        return self.cost / self.tokens * 1e6 if self.tokens > 0 else None


def rollup(rows: Iterable[tuple[str, Usage]]) -> dict[str, Usage]:
    """Summed per group (a model, a namespace): total cost over total tokens, never an average
    of the pools' ratios, which would weigh an idle pool like a busy one."""
    tokens: dict[str, float] = defaultdict(float)
    cost: dict[str, float] = defaultdict(float)
    for key, usage in rows:
        tokens[key] += usage.tokens
        cost[key] += usage.cost
    return {k: Usage(tokens[k], cost[k]) for k in tokens}
