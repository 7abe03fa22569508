"""``gpucost gateway``: an OpenAI-compatible entry point in front of InferencePools.

Routes ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models`` by the request's ``model``
to the pool serving it, streams the replica's answer through, and sends each request to the
replica with the least outstanding work. When a pool has no Ready replica (scaled to zero, or
cold-starting) it holds the request, up to the pool's ``holdTimeout`` in a queue of
``holdQueue``, and tells the operator at once through an annotation on the pool (one per gateway
replica: no leader, and it outlives either process). Stateless otherwise: any number of replicas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gpucost.core import routing

log = logging.getLogger(__name__)
MAX_BODY = 4 << 20
"""Bytes a request body may have (a long prompt is ~100 kB); more is 413."""
RETRY_AFTER_S = 5
TAIL_BYTES = 4096
"""The end of a stream kept to read its usage chunk from."""


@dataclass
class Route:
    """A pool as the gateway serves it."""

    namespace: str
    name: str
    model: str = ""
    """The name the replicas serve (a request for ``namespace/model`` is sent as ``model``)."""
    endpoints: list[str] = field(default_factory=list)
    hold_timeout_s: float = 300.0
    hold_queue: int = 1000
    max_in_flight: int | None = None
    """Requests one replica is sent at a time (the pool's maxConcurrency); None: no limit."""
    ttft_objective_s: float | None = None
    """The pool's time-to-first-token objective: held requests that can still meet it go first."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass
class PoolLoad:
    """What this gateway replica tells the operator about one pool."""

    in_flight: int = 0
    held: int = 0
    last_request: float | None = None
    cold_start: float | None = None
    """Seconds from the first request held at zero replicas to its first token, the last time."""
    holding_since: float | None = None

    def wire(self, now: float) -> dict[str, Any]:
        return {
            "inFlight": self.in_flight,
            "held": self.held,
            "lastRequest": self.last_request,
            "coldStart": self.cold_start,
            "at": round(now, 3),
        }


@dataclass(eq=False)
class Waiter:
    """A held request: the replicas that did not take it, and the replica slot it is granted
    (taken for it at the grant, so nobody else gets that slot meanwhile)."""

    refused: set[str]
    granted: asyncio.Future[str]


class Unreachable(Exception):
    """The replica did not take the request (no connection, or 503: it is not serving yet or
    any more), so another replica may."""


Directory = Callable[[str], Route | None]
"""model name → the pool serving it (None: unknown model)."""
Signal = Callable[[Route, PoolLoad], Awaitable[None]]
"""Tell the operator about a pool's load now (a held request is demand)."""


def error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    """OpenAI's error shape."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return web.json_response(body, status=status, headers=headers)


def _completion_tokens(body: bytes) -> int:
    try:
        return int(json.loads(body).get("usage", {}).get("completion_tokens", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


def streamed_tokens(events: int, tail: bytes) -> int:
    """Tokens of a streamed answer: its usage chunk's count where the client asked for one
    (``stream_options.include_usage``; an event may carry several tokens), else one per event."""
    for event in reversed(tail.split(b"\n\n")):
        if event.startswith(b"data: {") and b'"usage"' in event:
            counted = _completion_tokens(event[6:])
            if counted:
                return counted
    return events


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["namespace", "pool"]
        self.requests = Counter(
            "gpucost_gateway_requests", "Requests answered", [*labels, "code"],
            registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "gpucost_gateway_generated_tokens", "Tokens streamed or returned", labels,
            registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "gpucost_gateway_time_to_first_token_seconds", "Request in to first byte out", labels,
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
        )  # fmt: skip
        self.in_flight = Gauge(
            "gpucost_gateway_in_flight", "Requests sent, not answered", labels,
            registry=self.registry,
        )  # fmt: skip
        self.held = Gauge(
            "gpucost_gateway_held", "Requests held for want of a Ready replica with room", labels,
            registry=self.registry,
        )  # fmt: skip
        self.retried = Counter(
            "gpucost_gateway_retried", "Requests sent on after a replica did not take them",
            labels, registry=self.registry,
        )  # fmt: skip
        self.hold = Histogram(
            "gpucost_gateway_hold_seconds", "Time a request was held", labels,
            registry=self.registry, buckets=(0.1, 1, 5, 15, 30, 60, 120, 300, 600),
        )  # fmt: skip


class Gateway:
    def __init__(self, directory: Directory, models: Callable[[], list[str]], signal: Signal):
        self.directory, self.models, self.signal = directory, models, signal
        self.in_flight: dict[str, int] = defaultdict(int)
        self.loads: dict[tuple[str, str], PoolLoad] = defaultdict(PoolLoad)
        self.reported: dict[str, routing.Reported] = {}
        self.waiting: dict[tuple[str, str], tuple[Route, routing.HoldQueue[Waiter]]] = {}
        """Per pool: its held requests, granted a replica slot as one frees or a replica comes."""
        self.metrics = Metrics()
        self._turn = 0
        self.session: aiohttp.ClientSession | None = None
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/completions", self.proxy)
        app.router.add_post("/v1/chat/completions", self.proxy)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/metrics", self.export)
        app.router.add_get("/healthz", self.healthz)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        self.app = app

    async def _open(self, _: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        # No connection cap: aiohttp's default of 100 would queue the 101st stream in the
        # connector, unseen by the routing counts (the replicas' own queues are the limit).
        connector = aiohttp.TCPConnector(limit=0)
        self.session = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, connector=connector
        )

    async def _close(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def endpoints_changed(self) -> None:
        """Called when the directory's endpoints change: held requests look again."""
        for route, _ in list(self.waiting.values()):
            self._dispatch(route)

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def export(self, _: web.Request) -> web.Response:
        """Each routed pool's token counter exists (at 0) before its first request, as vLLM's do
        from engine start: Prometheus' increase() then counts that request's tokens too."""
        for model in self.models():
            route = self.directory(model)
            if route is not None:
                self.metrics.tokens.labels(route.namespace, route.name)
        return web.Response(body=generate_latest(self.metrics.registry), content_type="text/plain")

    async def list_models(self, _: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "gpucost"} for m in self.models()]
        return web.json_response({"object": "list", "data": data})

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the body exceeds {MAX_BODY} bytes", "invalid_request_error")
        try:
            body = json.loads(raw)
            model = body["model"]
            if not isinstance(model, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return error(
                400, "the body must be JSON with a string 'model'", "invalid_request_error"
            )
        route = self.directory(model)
        if route is None:
            return error(404, f"The model `{model}` does not exist.", "invalid_request_error",
                         "model_not_found")  # fmt: skip
        if route.model and model != route.model:
            body["model"] = route.model
            raw = json.dumps(body).encode()
        labels = route.key
        load = self.loads[labels]
        load.last_request = time.time()
        arrived = time.monotonic()
        refused: set[str] = set()  # replicas gone (or not yet listening) for this request
        while (target := await self._replica(route, load, refused, arrived)) is not None:
            try:
                return await self._forward(request, raw, route, target, arrived)
            except Unreachable:
                refused.add(target)
                self.metrics.retried.labels(*labels).inc()
        self.metrics.requests.labels(*labels, "503").inc()
        return error(503, f"no replica of {route.namespace}/{route.name} became Ready in "
                     f"{route.hold_timeout_s:g}s", "service_unavailable")  # fmt: skip

    async def _replica(
        self, route: Route, load: PoolLoad, refused: set[str], arrived: float
    ) -> str | None:
        """A replica slot for the request, taken: at once, or after holding the request until
        ``_dispatch`` grants it one (None: the hold queue is full, or the hold timed out)."""
        held = self.waiting.get(route.key)
        queue = held[1] if held else routing.HoldQueue()  # not one made per request
        self.waiting[route.key] = (route, queue)  # the directory's latest word on the pool
        if not queue and (target := self._pick(route, refused)) is not None:
            self._take(route, target)
            return target
        if load.held >= route.hold_queue:
            return None
        if not route.endpoints and load.holding_since is None:
            load.holding_since = time.monotonic()  # a cold start begins
        load.held += 1
        self.metrics.held.labels(*route.key).set(load.held)
        started = time.monotonic()
        waiter = Waiter(refused, asyncio.get_running_loop().create_future())
        queue.add(waiter, arrived)
        handed = False
        try:
            await self.signal(route, load)
            self._dispatch(route)
            left = started + route.hold_timeout_s - time.monotonic()
            await asyncio.wait({waiter.granted}, timeout=max(left, 0))
            if not waiter.granted.done():
                return None
            handed = True
            return waiter.granted.result()
        finally:
            queue.discard(waiter)
            if not waiter.granted.done():
                waiter.granted.cancel()
            elif not handed:  # the client went away as its slot was granted: give it back
                self._release(route, waiter.granted.result())
            load.held -= 1
            self.metrics.held.labels(*route.key).set(load.held)
            self.metrics.hold.labels(*route.key).observe(time.monotonic() - started)

    def _dispatch(self, route: Route) -> None:
        """Grant free replica slots to held requests, in the hold queue's order. A granted
        request leaves the queue at once, so later slots go to the next ones."""
        if route.key not in self.waiting:
            return
        _, queue = self.waiting[route.key]
        granted: list[Waiter] = []
        for waiter in queue.in_order(time.monotonic(), route.ttft_objective_s):
            target = self._pick(route, waiter.refused)
            if target is None:
                if not waiter.refused:
                    break  # no room for anyone: a refused set only narrows the choice
                continue
            self._take(route, target)
            waiter.granted.set_result(target)
            granted.append(waiter)
        for waiter in granted:
            queue.discard(waiter)

    def _take(self, route: Route, target: str) -> None:
        self.in_flight[target] += 1
        self.loads[route.key].in_flight += 1
        self.metrics.in_flight.labels(*route.key).inc()

    def _release(self, route: Route, target: str) -> None:
        """The slot is free again: the held request first in order takes it."""
        self.in_flight[target] -= 1
        self.loads[route.key].in_flight -= 1
        self.metrics.in_flight.labels(*route.key).dec()
        self._dispatch(route)

    def _pick(self, route: Route, refused: set[str]) -> str | None:
        cap = route.max_in_flight or math.inf
        # the directory updates its routes in place
        endpoints = [e for e in route.endpoints if e not in refused and self.in_flight[e] < cap]
        if not endpoints:
            return None
        self._turn += 1
        turn = self._turn % len(endpoints)
        return routing.pick(endpoints[turn:] + endpoints[:turn], self.in_flight, self.reported)

    async def _forward(
        self, request: web.Request, raw: bytes, route: Route, target: str, arrived: float
    ) -> web.StreamResponse:
        """Send the request to ``target``, whose slot the caller took, and stream the answer."""
        labels = route.key
        load = self.loads[labels]
        assert self.session is not None
        response: web.StreamResponse | None = None
        try:
            async with self.session.post(
                f"http://{target}{request.path}",
                data=raw,
                headers={"Content-Type": "application/json"},
            ) as upstream:
                if upstream.status == 503:  # not serving (still loading, or draining): untaken
                    raise Unreachable(target)
                response = web.StreamResponse(status=upstream.status)
                for key in ("Content-Type",):
                    if key in upstream.headers:
                        response.headers[key] = upstream.headers[key]
                await response.prepare(request)
                first, whole, tail, events = True, b"", b"", 0
                streamed = "event-stream" in upstream.headers.get("Content-Type", "")
                async for chunk in upstream.content.iter_any():
                    if first:
                        self.metrics.ttft.labels(*labels).observe(time.monotonic() - arrived)
                        first = False
                        if load.holding_since is not None:
                            load.cold_start = round(time.monotonic() - load.holding_since, 3)
                            load.holding_since = None
                    if streamed:
                        events += chunk.count(b"data: {")
                        tail = (tail + chunk)[-TAIL_BYTES:]
                    else:
                        whole += chunk
                    await response.write(chunk)
                await response.write_eof()
                tokens = streamed_tokens(events, tail) if streamed else _completion_tokens(whole)
                self.metrics.tokens.labels(*labels).inc(tokens)
                self.metrics.requests.labels(*labels, str(upstream.status)).inc()
                return response
        except aiohttp.ClientConnectorError as e:  # before anything was sent
            raise Unreachable(target) from e
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
            if response is not None and response.prepared:
                raise  # mid-stream: the client sees the cut
            self.metrics.requests.labels(*labels, "502").inc()
            return error(502, f"replica {target} failed: {e!r}", "bad_gateway")
        finally:  # a client that went away frees its replica slot here, at once
            self._release(route, target)
