"""The gateway's view of the cluster: which pool serves which model, its Ready endpoints (from the
Service's EndpointSlices, as any inference gateway reads them), and the demand annotation it
writes on each pool for the operator.

Each gateway replica writes its own annotation key (``gateway.gpucost.dev/<id>``), so replicas
need no leader and never overwrite each other; the operator sums the fresh ones. The annotation
outlives a restart of either side: a held request is demand the moment it is held.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from typing import Any

import kubernetes

from gpucost import names
from gpucost.adapters.kube import Kube
from gpucost.api.common import duration_seconds
from gpucost.gateway import Gateway, PoolLoad, Route

log = logging.getLogger(__name__)
REFRESH_S = 1.0
DRAIN_S = 330.0
"""Longest a stopping gateway waits for its held and in-flight requests (the default hold
timeout and then some; the chart's terminationGracePeriodSeconds matches)."""


def ready_endpoints(
    discovery: kubernetes.client.DiscoveryV1Api, namespace: str, service: str
) -> list[str]:
    """``ip:port`` of the Service's Ready, not terminating endpoints from its EndpointSlices."""
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    ).items
    out = []
    for s in slices:
        port = next((p.port for p in s.ports or [] if p.name == "http"), None)
        for e in s.endpoints or []:
            ready = e.conditions and e.conditions.ready and not e.conditions.terminating
            if port and ready:
                out += [f"{ip}:{port}" for ip in e.addresses]
    return sorted(out)


def demand_key(gateway_id: str) -> str:
    return f"{names.DEMAND_ANNOTATION_PREFIX}{gateway_id}"[:253]


class KubeDirectory:
    def __init__(self, kube: Kube, gateway_id: str, namespace: str | None = None) -> None:
        self.kube, self.key, self.namespace = kube, demand_key(gateway_id), namespace
        self.discovery = kubernetes.client.DiscoveryV1Api(kube.client)
        self.routes: dict[str, Route] = {}
        self._sent: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._sent_at: dict[tuple[str, str], float] = {}
        self._unsent: dict[tuple[str, str], tuple[Route, PoolLoad]] = {}
        self._writers: dict[tuple[str, str], asyncio.Task] = {}
        self.gateway: Gateway | None = None

    def lookup(self, model: str) -> Route | None:
        return self.routes.get(model)

    def models(self) -> list[str]:
        return sorted(self.routes)  # bare names where unique, and every namespace/model

    async def run(self) -> None:
        """Refresh routes and flush the demand annotations, about once a second."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                changed = await loop.run_in_executor(None, self.refresh)
                if changed and self.gateway is not None:
                    await self.gateway.endpoints_changed()
                if self.gateway is not None:
                    await self.flush(self.gateway.loads)
            except Exception:  # the next round tries again; the gateway keeps serving
                log.exception("refreshing the gateway's routes failed")
            await asyncio.sleep(REFRESH_S)

    def refresh(self) -> bool:
        """Routes by ``<namespace>/<model>`` always, and by the bare model name where exactly one
        pool (not being deleted) serves it: a name two namespaces use is never guessed."""
        pools = [
            o
            for o in self.kube.inference_pools()
            if not o["metadata"].get("deletionTimestamp")
            and (not self.namespace or o["metadata"]["namespace"] == self.namespace)
        ]
        claims: dict[str, int] = {}
        for obj in pools:
            model = (obj.get("spec") or {}).get("servedModelName") or obj["metadata"]["name"]
            claims[model] = claims.get(model, 0) + 1
        changed = False
        seen = set()
        for obj in pools:
            meta, spec = obj["metadata"], obj.get("spec") or {}
            model = spec.get("servedModelName") or meta["name"]
            qualified = f"{meta['namespace']}/{model}"
            route = self.routes.get(qualified) or Route(meta["namespace"], meta["name"], model)
            route.model = model
            scaling = spec.get("autoscaling") or {}
            route.hold_timeout_s = duration_seconds(scaling.get("holdTimeout", "5m"))
            route.hold_queue = int(scaling.get("holdQueue", 1000))
            route.max_in_flight = spec.get("maxConcurrency")
            objective = scaling.get("ttftObjective")
            route.ttft_objective_s = duration_seconds(objective) if objective else None
            endpoints = self._endpoints(meta["namespace"], meta["name"])
            if endpoints != route.endpoints:
                route.endpoints[:] = endpoints  # in place: held requests look at this list
                changed = True
            for key in (qualified, model) if claims[model] == 1 else (qualified,):
                self.routes[key] = route
                seen.add(key)
        for gone in set(self.routes) - seen:
            self.routes.pop(gone)
        return changed

    def _endpoints(self, namespace: str, service: str) -> list[str]:
        return ready_endpoints(self.discovery, namespace, service)

    async def signal(self, route: Route, load: PoolLoad) -> None:
        """At once: a held request is demand the operator must see now, not at the next flush.
        One write at a time per pool, each with the load as it is when it goes: a thousand
        requests held in a burst are one or two writes, not a thousand queued behind each other
        (and the held request never waits for the API)."""
        key = (route.namespace, route.name)
        self._unsent[key] = (route, load)
        writer = self._writers.get(key)
        if writer is None or writer.done():
            self._writers[key] = asyncio.create_task(self._write_unsent(key))

    async def _write_unsent(self, key: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        while (unsent := self._unsent.pop(key, None)) is not None:
            try:
                await loop.run_in_executor(None, self._write, *unsent)
            except Exception:  # the flush writes it again within a second
                log.exception("telling the operator about %s/%s failed", *key)

    async def flush(self, loads: dict[tuple[str, str], PoolLoad]) -> None:
        for (namespace, name), load in list(loads.items()):
            state = _state(load)
            # An unchanged busy load is refreshed every 10 s, so the operator can tell it from a
            # gateway that went away; an idle one needs no refresh (stale and idle mean the same).
            sent = self._sent.get((namespace, name))
            busy = load.in_flight or load.held
            age = time.time() - self._sent_at.get((namespace, name), 0)
            if sent == state and (not busy or age < 10):
                continue
            route = Route(namespace, name)
            await asyncio.get_running_loop().run_in_executor(None, self._write, route, load)

    def _write(self, route: Route, load: PoolLoad) -> None:
        """Runs in a thread while requests go on: what is recorded as sent is what the body
        says, not the load as it is once the API answered (a request that ended meanwhile,
        with its cold start, would otherwise look sent and never be)."""
        now = time.time()
        state, wire = _state(load), load.wire(now)
        body: dict[str, Any] = {"metadata": {"annotations": {self.key: json.dumps(wire)}}}
        try:
            self.kube.custom.patch_namespaced_custom_object(
                "gpucost.dev", "v1alpha1", route.namespace, "inferencepools", route.name, body
            )
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
        key = (route.namespace, route.name)
        self._sent[key] = state
        self._sent_at[key] = now


def _state(load: PoolLoad) -> tuple[Any, ...]:
    """What a write tells the operator, as compared between flushes."""
    return (load.in_flight, load.held, load.last_request, load.cold_start)


async def serve(kube: Kube, gateway_id: str, host: str, port: int, namespace: str | None) -> None:
    """Run until SIGTERM or SIGINT, then stop accepting and keep routing until every held and
    in-flight request is answered (or ``DRAIN_S`` passes): an accepted request is not dropped by
    a gateway rollout."""
    from aiohttp import web

    directory = KubeDirectory(kube, gateway_id, namespace)
    gateway = Gateway(directory.lookup, directory.models, directory.signal)
    directory.gateway = gateway
    runner = web.AppRunner(gateway.app, shutdown_timeout=DRAIN_S, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("gateway %s listening on %s:%d", gateway_id, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    refresher = asyncio.create_task(directory.run())
    await stop.wait()
    await site.stop()  # no new connections; the routes keep refreshing for the held ones
    deadline = loop.time() + DRAIN_S
    busy = lambda: any(x.held or x.in_flight for x in gateway.loads.values())  # noqa: E731
    while busy() and loop.time() < deadline:
        await asyncio.sleep(0.1)
    log.info("gateway %s drained; stopping", gateway_id)
    refresher.cancel()
    await runner.cleanup()
