"""Gives every Running replica pod annotated ``SERVE`` a real server process on its own pod IP
and port (KWOK runs no containers), and plays the kubelet's prober for it.

The server is ``vllmsim`` for every engine (the one fake: no GPU here), started with the pod's
args, its GPU slice and the node's GPU; the prober GETs the pod's readiness probe path on that
IP, as the kubelet does, and writes the pod's Ready condition, so the EndpointSlice controller
puts only Ready replicas behind the pool's Service. A deleted pod keeps serving through its
preStop sleep and finishes its in-flight requests before its server stops, as a container does
between SIGTERM and the end of its grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
from aiohttp import web

from gpucost import names
from gpucost.devcluster.controlplane import POD_CIDR, SERVE
from gpucost.devcluster.vllmsim import Server, Sizing, StartError
from gpucost.gatewaykube import ready_endpoints as gateway_endpoints

log = logging.getLogger(__name__)


@dataclass
class Replica:
    name: str
    namespace: str
    ip: str
    port: int
    server: Server
    runner: web.AppRunner
    drain_seconds: float
    grace_seconds: float
    pool: str
    ready: bool = False
    prober: asyncio.Task | None = None


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "server")


def _env(container: dict[str, Any], name: str) -> str | None:
    return next((e.get("value") for e in container.get("env") or [] if e["name"] == name), None)


def ready_endpoints(core: kubernetes.client.CoreV1Api, namespace: str, service: str) -> list[str]:
    """The Service's Ready endpoints as the gateway reads them (there is no kube-proxy here)."""
    return gateway_endpoints(kubernetes.client.DiscoveryV1Api(core.api_client), namespace, service)


def check_pod_network() -> None:
    """Fail with the fix when pod IPs are not local here (the tests run in scripts/netns.sh)."""
    first = POD_CIDR.split("/")[0].rsplit(".", 1)[0] + ".250"
    try:
        with socket.socket() as s:
            s.bind((first, 0))
    except OSError as e:
        raise RuntimeError(
            f"pod IPs ({POD_CIDR}) are not local addresses here ({e}): run through "
            "scripts/test.sh, or prefix the command with scripts/netns.sh"
        ) from None


class Harness:
    """Runs on its own thread and event loop; ``start``/``stop`` from the test or the demo."""

    def __init__(self, kubeconfig: Path, targets_file: Path | None = None) -> None:
        self.targets_file = targets_file
        """Where the Running replicas are written for Prometheus (file_sd), when given."""
        self.api = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.replicas: dict[str, Replica] = {}
        self.failures: dict[str, str] = {}
        """``namespace/pod`` → why its server would not start (what vLLM prints)."""
        self.loop = asyncio.new_event_loop()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._nodes: dict[str, dict[str, str]] = {}
        self._gone: set[str] = set()
        """Uids of pods deleted (or being deleted): a start still waiting gives up."""

    def start(self) -> None:
        for target in (self.loop.run_forever, self._watch):
            thread = threading.Thread(target=target, daemon=True, name="serving-harness")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        done: Future = asyncio.run_coroutine_threadsafe(self._stop_all(), self.loop)
        done.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _stop_all(self) -> None:
        for uid in list(self.replicas):
            await self._stop(uid, drain=0)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _watch(self) -> None:
        selector = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
        while not self._stopping.is_set():
            try:
                stream = kubernetes.watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=selector,
                    timeout_seconds=30,
                )
                for event in stream:
                    pod = self.api.sanitize_for_serialization(event["object"])
                    self._seen(event["type"], pod)
                    if self._stopping.is_set():
                        return
            except Exception:  # the watch is restarted: a dropped connection is not fatal
                log.exception("serving harness: pod watch failed; watching again")

    def _seen(self, kind: str, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        if SERVE not in (meta.get("annotations") or {}):
            return
        uid = meta["uid"]
        gone = kind == "DELETED" or meta.get("deletionTimestamp")
        if gone:
            self._gone.add(uid)
            asyncio.run_coroutine_threadsafe(self._stop(uid), self.loop)
        elif status.get("phase") == "Running" and status.get("podIP") and uid not in self.replicas:
            node = self._node_labels(pod["spec"].get("nodeName", ""))
            asyncio.run_coroutine_threadsafe(self._start(uid, pod, node), self.loop)

    def _node_labels(self, name: str) -> dict[str, str]:
        if name not in self._nodes:
            self._nodes[name] = self.core.read_node(name).metadata.labels or {}
        return self._nodes[name]

    async def _start(self, uid: str, pod: dict[str, Any], node: dict[str, str]) -> None:
        if uid in self.replicas:
            return
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        container = _container(pod)
        slice_mib = int(meta["annotations"][names.ANNOTATION_GPU_MEMORY])
        gpu_mib = int(node.get(names.LABEL_GPU_MEMORY, slice_mib))
        weights = _env(container, "SIM_WEIGHTS_MIB")
        try:
            sizing = Sizing.from_args(
                container.get("args") or [], slice_mib, gpu_mib, int(weights) if weights else None
            )
        except StartError as e:
            log.warning("replica %s does not start: %s", key, e)
            self.failures[key] = str(e)
            await self._status(meta, ready=False, failed=str(e))
            return
        server = Server(
            sizing,
            node.get(names.LABEL_GPU_PRODUCT, ""),
            float(_env(container, "SIM_LOAD_SECONDS") or 1.0),
            float(_env(container, "SIM_SPEEDUP") or 1.0),
            int(_env(container, "SIM_STREAM_TOKENS") or 1),
        )
        runner = web.AppRunner(server.app, shutdown_timeout=60, access_log=None)
        await runner.setup()
        port = container["ports"][0]["containerPort"]
        # KWOK hands a deleted pod's IP to the next pod at once, while that pod's server may still
        # be draining on it (on a real node the IP is freed only when its sandbox is gone): wait
        # for it as long as this pod lives
        address, waited = f"{pod['status']['podIP']}:{port}", 0
        while True:
            try:
                await web.TCPSite(runner, pod["status"]["podIP"], port).start()
                break
            except OSError as e:
                if uid in self._gone:
                    await runner.cleanup()
                    return
                if waited % 150 == 0:
                    log.warning("replica %s waits for %s, still in use: %s", key, address, e)
                waited += 1
                await asyncio.sleep(0.2)
        if uid in self._gone:  # deleted while it waited: its stop found nothing to stop
            await runner.cleanup()
            return
        log.info("replica %s serving on %s", key, address)
        server.start_engine()
        stop = (container.get("lifecycle") or {}).get("preStop") or {}
        replica = Replica(
            meta["name"],
            meta["namespace"],
            pod["status"]["podIP"],
            port,
            server,
            runner,
            float((stop.get("sleep") or {}).get("seconds", 0)),
            float(pod["spec"].get("terminationGracePeriodSeconds") or 30),
            meta["labels"].get(names.LABEL_POOL, ""),
        )
        self.replicas[uid] = replica
        self._publish()
        replica.prober = asyncio.get_running_loop().create_task(self._probe(replica, container))

    def _publish(self) -> None:
        """The replicas for Prometheus's file_sd, labelled as the pool's PodMonitor would."""
        if self.targets_file is None:
            return
        groups = [
            {
                "targets": [f"{r.ip}:{r.port}"],
                "labels": {"namespace": r.namespace, "pool": r.pool, "pod": r.name},
            }
            for r in self.replicas.values()
        ]
        partial = self.targets_file.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        partial.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    async def _probe(self, replica: Replica, container: dict[str, Any]) -> None:
        probe = container.get("readinessProbe") or {}
        period = float(probe.get("periodSeconds", 10))
        timeout = aiohttp.ClientTimeout(total=float(probe.get("timeoutSeconds", 1)))
        path = (probe.get("httpGet") or {}).get("path", "/health")
        url = f"http://{replica.ip}:{replica.port}{path}"
        meta = {"name": replica.name, "namespace": replica.namespace}
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    async with session.get(url) as resp:
                        ok = resp.status < 400
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                if ok != replica.ready:
                    replica.ready = ok
                    await self._status(meta, ready=ok)
                await asyncio.sleep(period)

    async def _status(self, meta: dict[str, Any], ready: bool, failed: str = "") -> None:
        state: dict[str, Any] = {"running": {}}
        if failed:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": failed[-1000:]}}
        value = "True" if ready else "False"
        patch = {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": value},
                    {"type": "ContainersReady", "status": value},
                ],
                "containerStatuses": [
                    {
                        "name": "server",
                        "image": "simulated",
                        "imageID": "",
                        "ready": ready,
                        "restartCount": 0,
                        "started": not failed,
                        "state": state,
                    }
                ],
            }
        }

        def write() -> None:
            try:
                self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], patch)
            except kubernetes.client.ApiException as e:
                if e.status != 404:  # a pod deleted meanwhile needs no status
                    raise

        await asyncio.get_running_loop().run_in_executor(None, write)

    async def _stop(self, uid: str, drain: float | None = None) -> None:
        replica = self.replicas.pop(uid, None)
        if replica is None:
            return
        self._publish()
        if replica.prober:
            replica.prober.cancel()
        # preStop: still serving while the endpoint leaves every client's list
        await asyncio.sleep(replica.drain_seconds if drain is None else drain)
        deadline = asyncio.get_running_loop().time() + replica.grace_seconds
        while replica.server.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await replica.runner.cleanup()
        replica.server.stop_engine()
        log.info("replica %s/%s stopped; %s:%d free", replica.namespace, replica.name,
                 replica.ip, replica.port)  # fmt: skip


class Traffic:
    """Streaming chat completions, ``workers`` at a time, each sent to a Ready endpoint of the
    pool's Service (read from its EndpointSlices every 0.3 s, as an inference gateway does).
    Never retried: every failure counts."""

    def __init__(
        self,
        serving: Harness,
        namespace: str,
        service: str,
        model: str | None = None,
        workers: int = 4,
    ) -> None:
        self.model = model or service  # the operator serves a pool under its own name
        self.serving, self.namespace, self.service, self.workers = (
            serving,
            namespace,
            service,
            workers,
        )
        self.ok = 0
        self.failed: list[str] = []
        self.by_endpoint: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.targets: list[str] = []

        async def refresh() -> None:
            while not self._stop.is_set():
                self.targets = await loop.run_in_executor(
                    None, ready_endpoints, self.serving.core, self.namespace, self.service
                )
                await asyncio.sleep(0.3)

        async def worker(i: int) -> None:
            async with aiohttp.ClientSession() as session:
                n = i
                while not self._stop.is_set():
                    if not self.targets:
                        await asyncio.sleep(0.05)
                        continue
                    target = self.targets[n % len(self.targets)]
                    n += 1
                    body = {
                        "model": self.model,
                        "messages": [{"role": "user", "content": "hello " * 50}],
                        "max_tokens": 12,
                        "stream": True,
                    }
                    try:
                        url = f"http://{target}/v1/chat/completions"
                        async with session.post(url, json=body) as resp:
                            text = await resp.text()
                        if resp.status != 200 or not text.endswith("data: [DONE]\n\n"):
                            self.failed.append(f"{target}: HTTP {resp.status} {text[-200:]}")
                        else:
                            self.ok += 1
                            self.by_endpoint[target] += 1
                    except aiohttp.ClientError as e:
                        self.failed.append(f"{target}: {e!r}")

        refresher = asyncio.create_task(refresh())
        await asyncio.gather(*(worker(i) for i in range(self.workers)))
        refresher.cancel()


def main(argv: list[str] | None = None) -> None:
    """``python -m gpucost.devcluster.serving KUBECONFIG``: the harness in a process of its own
    (a benchmark keeps the replicas' event loop off its own interpreter); stops on SIGTERM."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kubeconfig", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    check_pod_network()
    harness = Harness(args.kubeconfig)
    harness.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    harness.stop()


if __name__ == "__main__":
    main()
