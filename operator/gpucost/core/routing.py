"""Which replica a gateway sends a request to: the one with the least outstanding work.

Outstanding work is the gateway's own in-flight count per replica (exact, instant), refined by
what the replica last reported (``vllm:num_requests_waiting``, KV-cache use) since other gateway
replicas send to it too. Pure: the counts in, an endpoint out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Reported:
    waiting: float = 0.0
    kv_usage: float = 0.0


def pick(
    endpoints: Sequence[str],
    in_flight: Mapping[str, int],
    reported: Mapping[str, Reported] | None = None,
) -> str | None:
    """None when there is no endpoint (the request is held). Ties go to the first in order, so
    a caller that rotates ``endpoints`` spreads an idle pool's load."""
    if not endpoints:
        return None
    reported = reported or {}

    def load(endpoint: str) -> tuple[float, float]:
        seen = reported.get(endpoint, Reported())
        return (in_flight.get(endpoint, 0) + seen.waiting, seen.kv_usage)

    return min(endpoints, key=load)


def hold_order(arrivals: Sequence[float], now: float, objective_s: float | None) -> list[int]:
    """Which held request a freed slot goes to first: indexes into ``arrivals`` (when each came).

    Oldest first, except that with a time-to-first-token objective the requests that can still
    meet it go before those already past it (oldest first within each). After a cold start or
    a burst the backlog has missed the objective anyway; serving it first would make every later
    request miss it too, the way a FIFO queue under overload does (Facebook's adaptive LIFO).
    """
    oldest = sorted(range(len(arrivals)), key=lambda i: arrivals[i])
    if objective_s is None:
        return oldest
    return sorted(oldest, key=lambda i: now - arrivals[i] > objective_s)
