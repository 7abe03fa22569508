"""Which replica a gateway sends a request to: the one with the least outstanding work.

Outstanding work is the gateway's own in-flight count per replica (exact, instant), refined by
what the replica last reported (``vllm:num_requests_waiting``, KV-cache use) since other gateway
replicas send to it too. Pure: the counts in, an endpoint out. When no replica has room, the
gateway holds requests in a ``HoldQueue``, which says who a freed slot goes to.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


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


class HoldQueue(Generic[T]):
    """Held requests, in the order a freed slot goes to them: oldest first, except that with a
    time-to-first-token objective the requests that can still meet it go before those already
    past it (oldest first within each). After a cold start or a burst the backlog has missed the
    objective anyway; serving it first would make every later request miss it too, the way a
    FIFO queue under overload does (Facebook's adaptive LIFO).

    A request joins at the tail of the fresh ones and moves once to the tail of the stale ones
    when it passes the objective, so a freed slot costs O(1) (amortised) however long the
    backlog: sorting it on each slot made draining 10,000 held requests cost seconds of the
    event loop. Requests are told in the order they were held, which is their arrival order.
    """

    def __init__(self) -> None:
        # OrderedDict, not dict: a dict's iteration skips the slots of removed keys, so taking
        # from the head of a long queue would cost O(removed) each time
        self._fresh: OrderedDict[T, float] = OrderedDict()
        self._stale: OrderedDict[T, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._fresh) + len(self._stale)

    def add(self, item: T, arrived: float) -> None:
        self._fresh[item] = arrived

    def discard(self, item: T) -> None:
        self._fresh.pop(item, None)
        self._stale.pop(item, None)

    def in_order(self, now: float, objective_s: float | None) -> Iterator[T]:
        """The held requests, first to serve first. The queue must not change while this is
        iterated: a caller removes what it took once it stops."""
        if objective_s is None:
            yield from self._stale  # held while an objective was set, so the oldest
            yield from self._fresh
            return
        while self._fresh:
            oldest, arrived = next(iter(self._fresh.items()))
            if now - arrived <= objective_s:
                break
            self._stale[oldest] = self._fresh.pop(oldest)
        yield from self._fresh
        yield from self._stale
