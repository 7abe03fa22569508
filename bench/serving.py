"""Serving benchmark: the Azure LLM inference trace through the gateway to simulated vLLM replicas
on the real control plane, three ways.

    scripts/netns.sh .venv/bin/python bench/serving.py                 # x20, ~30 min on 2 cores
    scripts/netns.sh .venv/bin/python bench/serving.py --minutes 10    # 10 trace minutes a pass
    scripts/netns.sh .venv/bin/python bench/serving.py --json --png serving.png

(``scripts/netns.sh``: replicas listen on their pod IPs, which are local only in its network
namespace.) The trace (real arrival times, prompt and output token counts) is replayed twice with
30 trace minutes of no traffic between the passes, so scale to zero and the cold start happen;
the gap is fixed. Every run replays the same requests on the same cluster shape (two
GPUNodePools of g5.xlarge, one A10G each: on-demand and spot, at their us-east-1 prices and
the spot pool's Spot Advisor interruption rate; a replica is one whole GPU serving Llama-3.1-8B
in bf16) through the same gateway, whose hold queue serves first the requests that can still
meet the SLO (``ttftObjective``):

1. ``fixed``: replicas sized for the trace's peak minute at the target, never changed, on
   on-demand nodes (serving's default: it is not interruptible unless it says so);
2. ``baseline``: what KEDA or an HPA on in-flight requests does: ceil(in-flight / target), no
   stabilization, no rate limit, never below one replica; on-demand, as the fixed run;
3. ``gpucost``: ``spec.autoscaling`` with its defaults (fast up, slow down, to zero after 10
   minutes without a request), and ``capacityTypes: [spot, on-demand]``: the operator buys
   whichever costs less counting interruptions (spot here), on-demand when spot cannot launch,
   and on-demand for the first ``--on-demand-base`` replicas (``onDemandBase``).

Each run reports its node-hours beside its bill, so the share of the saving that comes from
following demand (node-hours) and the share that comes from the price of the hours stay apart.

Time runs ``--speedup`` times faster than the trace: arrivals, the simulated engine, model load
(60 s), node boot (120 s), the pool's idle timeout and every autoscaling window are divided by
it; the operator's, the gateway's and the control plane's own delays are not, so each of their
wall seconds costs ``speedup`` trace seconds. Latencies are reported in trace time (wall x
speedup), except the gateway's overhead, which is wall milliseconds: the TTFT p99 of the peak
five minutes sent through the gateway minus the same requests sent straight to the replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRACE = SHARED / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"
PRICES = SHARED / "prices" / "aws_ec2_gpu_linux_ondemand_spot.csv"
COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
GAP_S = 1800.0
"""Trace seconds of silence between the two passes: fixed, so no run buys its ratio with it."""
INSTANCE, REGION = "g5.xlarge", "us-east-1"
GPU_MODEL, GPU_MIB = "NVIDIA-A10G", 23028
LOAD_S, BOOT_S = 60.0, 120.0
"""Trace seconds a replica loads its model (vllm-perf: 8B bf16 from local disk with CUDA graphs)
and a GPU node takes from launch to Ready."""
WARMUP_S = 120.0
"""Trace seconds an autoscaled run keeps its warm floor into the replay: by then the in-flight
count is the trace's own, not the ramp from an empty pool (longer than a request lasts)."""
RUNS = ("fixed", "baseline", "gpucost")
NAME = "llm"
POOL_LABEL = "gpucost.dev/nodepool"
POOLS = {"bench": "on-demand", "bench-spot": "spot"}
"""The cluster's GPUNodePools and their capacity types."""
NODES = f"{POOL_LABEL} in ({','.join(POOLS)})"


class TraceError(ValueError):
    """A trace row that cannot be replayed: names the file and the line."""


@dataclass(frozen=True)
class Req:
    at: float
    """Trace seconds from the start of the replay."""
    prompt: int
    output: int


def load_trace(path: Path, minutes: float | None = None) -> list[Req]:
    """Requests of a CSV with the Azure trace's columns, at seconds from its first arrival."""
    rows: list[tuple[datetime, int, int]] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                # the trace's timestamps carry 7 fractional digits; datetime takes 6
                stamp = datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
                prompt, output = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            except (TypeError, ValueError) as e:
                raise TraceError(f"{path}:{line}: {e}") from None
            if prompt < 1 or output < 1:
                raise TraceError(f"{path}:{line}: token counts must be positive")
            rows.append((stamp, prompt, output))
    if not rows:
        raise TraceError(f"{path}: no requests")
    rows.sort(key=lambda r: r[0])
    first = rows[0][0]
    out = [Req((s - first).total_seconds(), p, o) for s, p, o in rows]
    return [r for r in out if minutes is None or r.at < minutes * 60]


def two_passes(trace: Sequence[Req]) -> list[Req]:
    """The trace, ``GAP_S`` of silence, the trace again."""
    second = trace[-1].at + GAP_S
    return [*trace, *(Req(r.at + second, r.prompt, r.output) for r in trace)]


@functools.cache
def _engine():
    from prometheus_client import CollectorRegistry

    from gpucost.devcluster.vllmsim import Engine, Sizing

    return Engine(Sizing.from_args([], GPU_MIB, GPU_MIB, None), GPU_MODEL, CollectorRegistry())


def service_seconds(prompt: int, output: int, batch: float) -> float:
    """A request's time on a replica with ``batch`` running sequences and no queue (the
    simulator's own cost model: the sizing a team would do from a load test)."""
    engine = _engine()
    return engine.prefill * prompt + engine.step_seconds(max(1, round(batch)), 0) * output


def kv_concurrency(reqs: Sequence[Req]) -> int:
    """Requests of the trace's mean size a replica's KV cache holds at once: past that the
    engine queues them, so the pool's ``maxConcurrency`` holds them at the gateway instead."""
    from gpucost.devcluster.vllmsim import BLOCK

    mean = sum(r.prompt + r.output for r in reqs) / len(reqs)
    return max(1, int(_engine().blocks * BLOCK // mean))


def concurrency(reqs: Sequence[Req], batch: float, until: float | None = None) -> list[float]:
    """Requests in flight at each whole trace second, with no queueing."""
    starts = sorted(r.at for r in reqs)
    ends = sorted(r.at + service_seconds(r.prompt, r.output, batch) for r in reqs)
    last = until if until is not None else ends[-1]
    return [bisect_right(starts, t) - bisect_right(ends, t) for t in range(int(last) + 1)]


def peak_minute(series: Sequence[float]) -> float:
    """The highest one-minute mean of a per-second series."""
    window = 60
    if len(series) <= window:
        return sum(series) / max(1, len(series))
    total = best = sum(series[:window])
    for i in range(window, len(series)):
        total += series[i] - series[i - window]
        best = max(best, total)
    return best / window


def oracle_replica_hours(series: Sequence[float], target: float) -> float:
    """Replica-hours if replicas followed each minute's mean load exactly, appeared at once and
    cost nothing at zero: a lower bound no reactive autoscaler reaches."""
    hours = 0.0
    for start in range(0, len(series), 60):
        minute = series[start : start + 60]
        hours += math.ceil(sum(minute) / len(minute) / target - 1e-9) * len(minute) / 3600
    return hours


@dataclass(frozen=True)
class Prices:
    on_demand: float
    spot: float
    spot_interruptions_per_month: float
    """The share of spot nodes taken back a month (the Spot Advisor bucket's middle)."""

    def of(self, pool: str) -> float:
        return self.spot if POOLS.get(pool) == "spot" else self.on_demand


def prices(path: Path = PRICES) -> Prices:
    from gpucost.core.prices import SPOT_ADVISOR

    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["instance_type"] == INSTANCE and row["region"] == REGION:
                return Prices(
                    float(row["ondemand_usd_hr"]),
                    float(row["spot_avg_usd_hr"]),
                    SPOT_ADVISOR[row["spot_interrupt_freq"]],
                )
    raise LookupError(f"{path}: no {INSTANCE} in {REGION}")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Record:
    """One request as the client saw it (epoch seconds)."""

    sent: float
    ttft: float | None
    done: float
    status: int
    """HTTP status; -1 for a stream cut before ``[DONE]``, 0 for a connection error."""
    tokens: int
    error: str = ""


@dataclass
class Sample:
    at: float
    """Epoch seconds."""
    ready: int
    replicas: int
    nodes: int
    usd_per_hour: float = 0.0
    """What the pool's nodes cost an hour at this sample."""


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    nodes: dict[str, list[float]] = field(default_factory=dict)
    """Node name → [first seen, last seen] (epoch)."""
    pools: dict[str, str] = field(default_factory=dict)
    """Node name → its GPUNodePool."""

    def cold(self) -> list[tuple[float, float]]:
        """Spans with no Ready replica."""
        spans, start = [], None
        for s in self.samples:
            if s.ready == 0 and start is None:
                start = s.at
            elif s.ready > 0 and start is not None:
                spans.append((start, s.at))
                start = None
        if start is not None:
            spans.append((start, math.inf))
        return spans


def summarize(
    reqs: Sequence[Req],
    records: Sequence[Record],
    timeline: Timeline,
    window: tuple[float, float],
    price: Prices,
    speedup: float,
    slo_s: float,
) -> dict:
    """A run's figures: latencies and costs in trace time."""
    cold = timeline.cold()

    def is_cold(r: Record) -> bool:
        return any(a <= r.sent < b for a, b in cold)

    ok = [
        (rec, req)
        for rec, req in zip(records, reqs)
        if rec.status == 200 and rec.ttft is not None and rec.tokens == req.output
    ]
    ttft = [rec.ttft * speedup for rec, _ in ok]
    met = [rec for rec, _ in ok if rec.ttft * speedup <= slo_s]
    warm_total = [r for r in records if not is_cold(r)]
    warm_met = [r for r in met if not is_cold(r)]
    missed = set(map(id, warm_total)) - set(map(id, warm_met))
    misses: dict[int, int] = {}  # trace minute → warm requests that missed the SLO
    for r in warm_total:
        if id(r) in missed:
            minute = int((r.sent - window[0]) * speedup // 60)
            misses[minute] = misses.get(minute, 0) + 1
    start, end = window
    hours = {
        name: max(0.0, min(last, end) - max(first, start)) * speedup / 3600
        for name, (first, last) in timeline.nodes.items()
    }
    node_hours = sum(hours.values())
    spot_hours = sum(h for n, h in hours.items() if POOLS.get(timeline.pools.get(n, "")) == "spot")
    tokens = sum(rec.tokens for rec, _ in ok)
    cost = sum(h * price.of(timeline.pools.get(n, "")) for n, h in hours.items())
    colds = []
    for a, b in cold:
        inside = [r for r in records if a <= r.sent < b and r.ttft is not None]
        if inside:
            colds.append(min(inside, key=lambda r: r.sent).ttft * speedup)
    return {
        "requests": len(records),
        "dropped": len(records) - len(ok),
        "generated_tokens": tokens,
        "node_hours": round(node_hours, 4),
        "spot_node_hours": round(spot_hours, 4),
        "usd": round(cost, 4),
        "usd_per_million_tokens": round(cost / tokens * 1e6, 4) if tokens else None,
        "ttft_p50_s": _round(percentile(ttft, 50)),
        "ttft_p95_s": _round(percentile(ttft, 95)),
        "ttft_p99_s": _round(percentile(ttft, 99)),
        "slo_attainment": round(len(met) / len(records), 5) if records else None,
        "slo_attainment_warm": round(len(warm_met) / len(warm_total), 5) if warm_total else None,
        "cold_requests": len(records) - len(warm_total),
        "warm_misses_by_minute": misses,
        "cold_start_s": _round(max(colds)) if colds else None,
        "max_replicas": max((s.replicas for s in timeline.samples), default=0),
        "max_nodes": max((s.nodes for s in timeline.samples), default=0),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def peak_window(reqs: Sequence[Req], minutes: int = 5) -> list[Req]:
    """The busiest ``minutes`` of the first pass (most arrivals), from its own start."""
    span = minutes * 60
    times = [r.at for r in reqs]
    best = max(range(len(reqs)), key=lambda i: bisect_right(times, times[i] + span) - i)
    chosen = [r for r in reqs if times[best] <= r.at < times[best] + span]
    return [Req(r.at - times[best], r.prompt, r.output) for r in chosen]


# The client: its own process, so its event loop shares nothing with the orchestration.


async def _one(session, url: str, model: str, req: Req) -> Record:
    import aiohttp

    from gpucost.gateway import TAIL_BYTES, streamed_tokens

    body = {
        "model": model,
        "prompt": "abcd" * req.prompt,  # the simulator counts 4 characters a token
        "max_tokens": req.output,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.time()
    first = None
    try:
        async with session.post(f"{url}/v1/completions", json=body) as r:
            if r.status != 200:
                text = await r.text()
                return Record(sent, None, time.time(), r.status, 0, text[:300])
            tail = b""
            async for chunk in r.content.iter_any():
                if first is None and b'"text"' in chunk:
                    first = time.time() - sent
                tail = (tail + chunk)[-TAIL_BYTES:]
        done = tail.endswith(b"data: [DONE]\n\n")
        # the usage chunk's count (0 without one: a stream is not counted by its events here)
        tokens = streamed_tokens(0, tail)
        return Record(sent, first, time.time(), 200 if done else -1, tokens)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return Record(sent, first, time.time(), 0, 0, repr(e)[:300])


async def _replay(job: dict) -> list[Record]:
    import aiohttp

    reqs = [Req(*r) for r in job["requests"]]
    urls, speedup, start = job["urls"], job["speedup"], job["start_at"]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for i, req in enumerate(reqs):
            delay = start + req.at / speedup - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            url = urls[i % len(urls)]
            tasks.append(asyncio.create_task(_one(session, url, job["model"], req)))
        return await asyncio.gather(*tasks)


def client_main(job_file: Path) -> None:
    job = json.loads(job_file.read_text())
    records = asyncio.run(_replay(job))
    Path(job["out"]).write_text("\n".join(json.dumps(asdict(r)) for r in records))


def replay(
    reqs: Sequence[Req], urls: list[str], model: str, speedup: float, root: Path, timeout: float
) -> list[Record]:
    """Send ``reqs`` at their (compressed) times from a client process; its records, in order."""
    tag = uuid.uuid4().hex[:6]
    job, out = root / f"client-{tag}.json", root / f"records-{tag}.jsonl"
    start = time.time() + 1.0
    job.write_text(
        json.dumps(
            {
                "requests": [[r.at, r.prompt, r.output] for r in reqs],
                "urls": urls,
                "model": model,
                "speedup": speedup,
                "start_at": start,
                "out": str(out),
            }
        )
    )
    subprocess.run(
        [sys.executable, __file__, "--client", str(job)],
        check=True,
        timeout=reqs[-1].at / speedup + timeout,
    )
    return [Record(**json.loads(line)) for line in out.read_text().splitlines()]


# The cluster.


def scaled(seconds: float, speedup: float) -> str:
    """A trace duration as the pool's spec gives it (whole seconds, at least one)."""
    return f"{max(1, round(seconds / speedup))}s"


def node_pool(name: str, speedup: float, price: Prices, max_nodes: int) -> dict:
    capacity = POOLS[name]
    spot = (
        {
            "interruptionsPerMonth": price.spot_interruptions_per_month,
            "interruptionLossSeconds": round(BOOT_S + LOAD_S),  # a replica's cold start
        }
        if capacity == "spot"
        else {}
    )
    return {
        "apiVersion": "gpucost.dev/v1alpha1",
        "kind": "GPUNodePool",
        "metadata": {"name": name, "labels": {"bench": "serving"}},
        "spec": spot
        | {
            "instanceType": INSTANCE,
            "capacityType": capacity,
            "pricePerHour": price.of(name),
            "gpu": {"model": GPU_MODEL, "memoryMiB": GPU_MIB, "count": 1},
            "cpu": "4",
            "memory": "16Gi",
            "minNodes": 0,
            "maxNodes": max_nodes,
            "disruptionBudget": 10,  # idle nodes go together, not one at a time
            # an idle node is kept as long as a new one takes to boot, the break-even between
            # paying for its idling and paying for a boot (the ski-rental rule)
            "idleTimeout": scaled(BOOT_S, speedup),
            "provider": {"kind": "kwok", "bootDelay": scaled(BOOT_S, speedup)},
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        },
    }


def hold(slo_s: float, speedup: float) -> dict:
    """The gateway's hold settings, the same in every run: held requests that can still meet
    the SLO first."""
    return {
        "holdTimeout": scaled(900, speedup),
        "holdQueue": 20000,
        "ttftObjective": f"{max(1, round(slo_s * 1000 / speedup))}ms",
    }


def autoscaling(kind: str, target: float, fixed: int, speedup: float, slo_s: float) -> dict:
    """``spec.autoscaling`` of a run, its trace-time windows compressed like everything else.
    The fixed run's is pinned at its size (minReplicas = maxReplicas): only the gateway's hold
    settings in it count."""

    def rules(window_s: float, *policies: tuple[str, int, float]) -> dict:
        return {
            "stabilizationWindowSeconds": round(window_s / speedup),
            "policies": [
                {"type": t, "value": v, "periodSeconds": max(1, round(period / speedup))}
                for t, v, period in policies
            ],
        }

    # the same ceiling for both autoscalers: twice what the fixed run holds
    base = {"maxReplicas": 2 * fixed, "metric": "concurrency", "target": target}
    base |= hold(slo_s, speedup)
    if kind == "baseline":  # every recommendation at once, both ways; never to zero
        return base | {
            "minReplicas": 1,
            "behavior": {
                "scaleUp": rules(0, ("Percent", 1000, 1)),
                "scaleDown": rules(0, ("Percent", 100, 1)),
            },
        }
    if kind == "gpucost":  # the operator's defaults (core/demand.py), in trace time
        return base | {
            "minReplicas": 0,
            "scaleToZeroAfter": scaled(600, speedup),
            "behavior": {
                "scaleUp": rules(0, ("Percent", 100, 15), ("Pods", 4, 15)),
                "scaleDown": rules(300, ("Pods", 1, 60)),
            },
        }
    return base | {"minReplicas": fixed, "maxReplicas": fixed}


def inference_pool(
    kind: str, namespace: str, replicas: int, spec: dict, speedup: float, cap: int, base: int = 0
) -> dict:
    from gpucost.devcluster.controlplane import SERVE

    body = {
        "apiVersion": "gpucost.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "image": "vllm/vllm-openai:v0.33.0",
            "replicas": replicas,
            "gpu": {"gpus": 1},
            "engine": "vllm",
            "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "16384"],
            "env": [
                {"name": "SIM_LOAD_SECONDS", "value": str(LOAD_S / speedup)},
                {"name": "SIM_SPEEDUP", "value": str(speedup)},
                {"name": "SIM_STREAM_TOKENS", "value": "16"},
            ],
            "probes": {"readiness": {"periodSeconds": 1}, "startup": {"periodSeconds": 1}},
            "nodePoolSelector": {"bench": "serving"},
            "maxConcurrency": cap,
            "template": {"metadata": {"annotations": {SERVE: "true"}}},
        },
    }
    body["spec"]["autoscaling"] = spec
    if kind == "gpucost":
        body["spec"] |= {"capacityTypes": ["spot", "on-demand"], "onDemandBase": base}
    return body


class Sampler(threading.Thread):
    """Ready replicas, spec.replicas and the pool's nodes, four times a second."""

    def __init__(self, cp, namespace: str, price: Prices) -> None:
        super().__init__(daemon=True)
        self.price = price
        import kubernetes

        api = kubernetes.config.new_client_from_config(str(cp.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.discovery = kubernetes.client.DiscoveryV1Api(api)
        self.namespace = namespace
        self.timeline = Timeline()
        self.stopping = threading.Event()

    def run(self) -> None:
        from gpucost.gatewaykube import ready_endpoints

        while not self.stopping.is_set():
            try:
                ready = len(ready_endpoints(self.discovery, self.namespace, NAME))
                pool = self.custom.get_namespaced_custom_object(
                    "gpucost.dev", "v1alpha1", self.namespace, "inferencepools", NAME
                )
                nodes = self.core.list_node(label_selector=NODES).items
            except Exception:  # noqa: BLE001 - a missed sample is not a failed run
                self.stopping.wait(0.25)
                continue
            now = time.time()
            usd = 0.0
            for n in nodes:
                name, of = n.metadata.name, n.metadata.labels[POOL_LABEL]
                self.timeline.nodes.setdefault(name, [now, now])[1] = now
                self.timeline.pools[name] = of
                usd += self.price.of(of)
            replicas = int(pool["spec"].get("replicas") or 0)
            self.timeline.samples.append(Sample(now, ready, replicas, len(nodes), usd))
            self.stopping.wait(0.25)


class Bench:
    """One control plane, operator, gateway and serving harness for all runs."""

    def __init__(self, args: argparse.Namespace, progress: Progress) -> None:
        self.args, self.progress = args, progress
        self.speedup = args.speedup
        self.price = prices()
        self.root = Path(tempfile.mkdtemp(prefix="serving-bench-"))
        self.cp = self.operator = self.gateway = self.harness = None

    def __enter__(self) -> "Bench":
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> "Bench":
        import kubernetes

        from gpucost.devcluster import binaries
        from gpucost.devcluster.controlplane import ControlPlane, reap_orphans
        from gpucost.devcluster.operatorproc import GatewayProcess, OperatorProcess
        from gpucost.devcluster.serving import check_pod_network

        check_pod_network()
        binaries.require()
        clusters = binaries.cache_root() / "bench-clusters"
        reap_orphans(clusters)
        clusters.mkdir(parents=True, exist_ok=True)
        step = self.progress.add_task("starting the control plane", total=None)
        self.cp = ControlPlane(f"serving-{uuid.uuid4().hex[:6]}", clusters)
        self.cp.start()
        api = kubernetes.config.new_client_from_config(str(self.cp.kubeconfig))
        self.discovery = kubernetes.client.DiscoveryV1Api(api)
        self.operator = OperatorProcess(
            self.cp.kubeconfig,
            self.root / "operator.log",
            resync_seconds=2.0,
            autoscale_seconds=1.0,
            env={"GPUCOST_DEMAND_INTERVAL": "1"},
        )
        self.gateway = GatewayProcess(self.cp.kubeconfig, self.root / "gateway.log")
        repo = Path(__file__).resolve().parents[1]
        self.cp.kubectl("apply", "-f", str(repo / "crds"))
        self.cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        pools = [node_pool(name, self.speedup, self.price, self.args.max_nodes) for name in POOLS]
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pools))
        log = (self.root / "harness.log").open("ab")
        self.harness = subprocess.Popen(
            [sys.executable, "-m", "gpucost.devcluster.serving", str(self.cp.kubeconfig)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(self.cp.kubeconfig)},
        )
        log.close()
        self.operator.start()
        self.gateway.start()
        self.progress.remove_task(step)
        return self

    def __exit__(self, *_: object) -> None:
        if self.harness is not None:
            self.harness.terminate()
            try:
                self.harness.wait(30)
            except subprocess.TimeoutExpired:
                self.harness.kill()
        for child in (self.gateway, self.operator):
            if child is not None:
                child.stop()
        if self.args.logs is not None:
            self.args.logs.mkdir(parents=True, exist_ok=True)
            for log in self.root.glob("*.log"):
                shutil.copy(log, self.args.logs / log.name)
            if self.cp is not None:
                shutil.copytree(self.cp.logs, self.args.logs / "control-plane", dirs_exist_ok=True)
        if self.cp is not None:
            self.cp.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _wait(self, what: str, check, timeout: float) -> None:
        from gpucost.devcluster.controlplane import poll

        poll(what, check, timeout, interval=0.5)

    def _ready(self, namespace: str) -> list[str]:
        from gpucost.gatewaykube import ready_endpoints

        return ready_endpoints(self.discovery, namespace, NAME)

    def _listed(self, model: str) -> bool:
        import urllib.request

        with urllib.request.urlopen(f"{self.gateway.url}/v1/models", timeout=5) as r:
            return model in [m["id"] for m in json.load(r)["data"]]

    def run(self, kind: str, reqs: Sequence[Req], fixed: int, cap: int) -> dict:
        """One run in its own namespace; the cluster is back to no nodes when it returns."""
        namespace = f"run-{kind}"
        spec = autoscaling(kind, self.args.target, fixed, self.speedup, self.args.slo)
        warm = fixed  # every run starts from the same warm state: the trace begins at full load
        self.cp.kubectl("create", "namespace", namespace)
        self.cp.wait_namespace(namespace)
        step = self.progress.add_task(f"{kind}: {warm} replica(s) warming up", total=None)
        # an autoscaled pool would scale an idle warm pool down before the trace starts: its
        # floor is the warm size until the replay's load is steady, then its own
        floor = spec | {"minReplicas": warm}
        self.cp.kubectl(
            "apply", "-f", "-",
            input=yaml.safe_dump(
                inference_pool(
                    kind, namespace, warm, floor, self.speedup, cap, self.args.on_demand_base
                )
            ),
        )  # fmt: skip
        model = f"{namespace}/{NAME}"
        self._wait(f"{kind}: {warm} Ready", lambda: len(self._ready(namespace)) >= warm, 600)
        self._wait(f"{kind}: the gateway routes {model}", lambda: self._listed(model), 60)
        overhead = None
        if kind == "fixed":
            overhead = self._overhead(namespace, model, reqs, step)
        sampler = Sampler(self.cp, namespace, self.price)
        sampler.start()
        wall = reqs[-1].at / self.speedup
        self.progress.update(
            step, description=f"{kind}: {len(reqs):,} requests over {wall / 60:.1f} min",
            total=wall, completed=0,
        )  # fmt: skip
        done = threading.Event()

        def tick() -> None:
            started = time.time()
            while not done.wait(1.0):
                last = sampler.timeline.samples[-1] if sampler.timeline.samples else None
                state = f"{last.ready} Ready, {last.nodes} nodes" if last else ""
                self.progress.update(
                    step, completed=min(wall, time.time() - started),
                    description=f"{kind}: replaying ({state})",
                )  # fmt: skip

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        if spec["minReplicas"] != warm:
            release = threading.Timer(
                WARMUP_S / self.speedup, self._floor, (namespace, spec["minReplicas"])
            )
            release.daemon = True
            release.start()
        try:
            records = replay(
                reqs, [self.gateway.url], model, self.speedup, self.root, self.args.hold_margin
            )
        finally:
            done.set()
            sampler.stopping.set()
            sampler.join(5)
        window = (records[0].sent, max(r.done for r in records))
        result = summarize(
            reqs, records, sampler.timeline, window, self.price, self.speedup, self.args.slo
        )
        if overhead:
            result |= overhead
        if kind == "gpucost":
            status = (
                json.loads(
                    self.cp.kubectl("get", "inferencepools.gpucost.dev", NAME, "-n", namespace,
                                    "-o", "json").stdout
                ).get("status") or {}
            ).get("autoscaling") or {}  # fmt: skip
            seconds = status.get("lastColdStartSeconds")
            result["status_cold_start_s"] = _round(seconds * self.speedup) if seconds else None
        result["timeline"] = [
            [
                round((s.at - window[0]) * self.speedup, 1),
                s.ready,
                s.replicas,
                s.nodes,
                round(s.usd_per_hour, 3),
            ]  # fmt: skip
            for s in sampler.timeline.samples
        ]
        errors = [r.error for r in records if r.status != 200][:5]
        result["errors"] = errors
        self.progress.update(step, description=f"{kind}: removing the pool; nodes going idle")
        self.cp.kubectl("delete", "namespace", namespace, "--wait=true", timeout=600)
        self._wait(f"{kind}: the nodes gone", lambda: not self._nodes(), 600)
        self.progress.remove_task(step)
        return result

    def _floor(self, namespace: str, replicas: int) -> None:
        patch = json.dumps({"spec": {"autoscaling": {"minReplicas": replicas}}})
        self.cp.kubectl(
            "patch", "inferencepools.gpucost.dev", NAME, "-n", namespace, "--type=merge",
            "-p", patch,
        )  # fmt: skip

    def _nodes(self) -> list[str]:
        out = self.cp.kubectl("get", "nodes", "-l", NODES, "-o", "name", check=False).stdout
        return out.split()

    def _overhead(self, namespace: str, model: str, reqs: Sequence[Req], step) -> dict:
        """The peak five minutes straight to the replicas, then the same through the gateway."""
        peak = peak_window(reqs)
        self.progress.update(step, description="fixed: gateway overhead (direct, then gateway)")
        direct_urls = [f"http://{e}" for e in self._ready(namespace)]
        direct = replay(peak, direct_urls, NAME, self.speedup, self.root, 120)
        via = replay(peak, [self.gateway.url], model, self.speedup, self.root, 120)
        ok = lambda rs: [r.ttft for r in rs if r.status == 200 and r.ttft is not None]  # noqa: E731
        d99, g99 = percentile(ok(direct), 99), percentile(ok(via), 99)
        d50, g50 = percentile(ok(direct), 50), percentile(ok(via), 50)
        in_flight = max_in_flight(via)
        return {
            "gateway_overhead_p99_ms": round((g99 - d99) * 1000, 2) if d99 and g99 else None,
            "gateway_overhead_p50_ms": round((g50 - d50) * 1000, 2) if d50 and g50 else None,
            "gateway_overhead_requests": len(peak),
            "gateway_overhead_peak_in_flight": in_flight,
            "gateway_overhead_dropped": sum(r.status != 200 for r in direct + via),
        }


def max_in_flight(records: Sequence[Record]) -> int:
    events = sorted([(r.sent, 1) for r in records] + [(r.done, -1) for r in records])
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reqs = report["arrivals_per_minute"]
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    axes[0].bar(range(len(reqs)), [n / 60 for n in reqs], width=1.0, color="0.6")
    axes[0].set_ylabel("requests/s")
    for kind, color in zip(RUNS, ("tab:red", "tab:orange", "tab:green")):
        line = report["runs"][kind]["timeline"]
        t = [row[0] / 60 for row in line]
        axes[1].step(t, [row[1] for row in line], where="post", color=color, label=kind)
        axes[2].step(t, [row[3] for row in line], where="post", color=color, label=kind)
        axes[3].step(t, [row[4] for row in line], where="post", color=color)
    axes[1].set_ylabel("Ready replicas")
    axes[2].set_ylabel("nodes")
    axes[3].set_ylabel("$ / hour")
    axes[3].set_xlabel("trace minutes (two passes, 30 minutes of silence between)")
    axes[1].legend(loc="upper right")
    ratio = report["runs"]["gpucost"]["usd_per_million_tokens_vs_fixed"]
    fig.suptitle(
        f"Azure LLM trace x{report['speedup']:g}, {INSTANCE} replicas: gpucost at {ratio:.2f}x "
        "the fixed-peak $ per 1M tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(console: Console, report: dict) -> None:
    table = Table(
        title=f"Azure LLM trace, 2 passes + {GAP_S / 60:.0f} min gap, x{report['speedup']:g} "
        f"(fixed = {report['fixed_replicas']} replicas for a peak minute of "
        f"{report['peak_minute_concurrency']:.1f} in flight at {report['target']:g} each)"
    )
    cols = (
        ("$/1M tok", "usd_per_million_tokens"),
        ("vs fixed", "usd_per_million_tokens_vs_fixed"),
        ("TTFT p50", "ttft_p50_s"),
        ("p95", "ttft_p95_s"),
        ("p99", "ttft_p99_s"),
        ("SLO", "slo_attainment"),
        ("SLO warm", "slo_attainment_warm"),
        ("dropped", "dropped"),
        ("cold start s", "cold_start_s"),
        ("max repl.", "max_replicas"),
        ("node-h", "node_hours"),
        ("node-h ×", "node_hours_vs_fixed"),
        ("on spot", "spot_node_hours"),
    )
    table.add_column("run")
    for title, _ in cols:
        table.add_column(title, justify="right")
    for kind in RUNS:
        run = report["runs"][kind]
        table.add_row(kind, *("-" if run.get(k) is None else f"{run[k]:g}" for _, k in cols))
    console.print(table)
    fixed = report["runs"]["fixed"]
    console.print(
        f"gateway overhead at the peak ({fixed.get('gateway_overhead_requests')} requests, "
        f"{fixed.get('gateway_overhead_peak_in_flight')} in flight): p50 "
        f"{fixed.get('gateway_overhead_p50_ms')} ms, p99 {fixed.get('gateway_overhead_p99_ms')} "
        f"ms (wall). Oracle (per-minute replicas, instant, free at zero): "
        f"{report['oracle_vs_fixed']:.2f}x fixed."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trace", type=Path, default=TRACE, help="CSV with the trace's columns")
    parser.add_argument("--speedup", type=float, default=20.0, help="time compression")
    parser.add_argument("--minutes", type=float, help="replay only the first N trace minutes")
    parser.add_argument("--target", type=float, default=12.0, help="in-flight per replica")
    parser.add_argument("--slo", type=float, default=2.0, help="TTFT SLO, trace seconds")
    parser.add_argument("--runs", default=",".join(RUNS), help="which runs (fixed is the base)")
    parser.add_argument("--max-nodes", type=int, default=40)
    parser.add_argument(
        "--on-demand-base", type=int, default=0, help="gpucost's replicas kept on on-demand"
    )
    parser.add_argument("--hold-margin", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--png", type=Path, help="requests/s, replicas, nodes, $/h over time")
    parser.add_argument("--logs", type=Path, help="keep the operator, gateway and cluster logs")
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args.client)
        return 0
    console = Console(stderr=True)
    try:
        trace = load_trace(args.trace, args.minutes)
    except TraceError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    reqs = two_passes(trace)
    series = concurrency(trace, args.target)
    peak = peak_minute(series)
    fixed = math.ceil(peak / args.target)
    span = reqs[-1].at
    arrivals = [0] * (int(span // 60) + 1)
    for r in reqs:
        arrivals[int(r.at // 60)] += 1
    report: dict = {
        "trace": str(args.trace),
        "speedup": args.speedup,
        "requests": len(reqs),
        "trace_minutes": round(span / 60, 1),
        "gap_minutes": GAP_S / 60,
        "target": args.target,
        "on_demand_base": args.on_demand_base,
        "slo_s": args.slo,
        "instance_type": INSTANCE,
        "prices": asdict(prices()),
        "peak_minute_concurrency": round(peak, 2),
        "fixed_replicas": fixed,
        "max_concurrency": kv_concurrency(reqs),
        "oracle_vs_fixed": round(
            2 * oracle_replica_hours(series, args.target) / (fixed * span / 3600), 4
        ),  # fmt: skip
        "arrivals_per_minute": arrivals,
        "runs": {},
    }
    kinds = [k for k in RUNS if k in args.runs.split(",")]
    with Progress(console=console, transient=True) as progress, Bench(args, progress) as bench:
        for kind in kinds:
            report["runs"][kind] = bench.run(kind, reqs, fixed, report["max_concurrency"])
            console.log(f"{kind}: {_brief(report['runs'][kind])}")
    fixed_run = report["runs"].get("fixed", {})
    for key in ("usd_per_million_tokens", "node_hours"):
        for run in report["runs"].values():
            base, mine = fixed_run.get(key), run.get(key)
            run[f"{key}_vs_fixed"] = round(mine / base, 4) if base and mine else None
    overhead = report["runs"].get("fixed", {}).get("gateway_overhead_p99_ms")
    for run in report["runs"].values():
        if run.get("gateway_overhead_p99_ms") is None:
            run["gateway_overhead_p99_ms"] = overhead  # one gateway; measured in the fixed run
    if args.png and all(k in report["runs"] for k in RUNS):
        plot(report, args.png)
    if args.json:
        print(json.dumps(report))
    elif all(k in report["runs"] for k in RUNS):
        render(Console(), report)
    return 0


def _brief(run: dict) -> str:
    keys = ("usd_per_million_tokens", "ttft_p99_s", "slo_attainment_warm", "dropped",
            "cold_start_s", "max_replicas", "errors")  # fmt: skip
    return ", ".join(f"{k}={run.get(k)}" for k in keys)


if __name__ == "__main__":
    sys.exit(main())
