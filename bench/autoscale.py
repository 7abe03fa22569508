"""Autoscaling benchmark: the operator on a real control plane, and its decisions on the openb
trace.

    python bench/autoscale.py                     # both parts, 1,000 replicas
    python bench/autoscale.py --replicas 200      # a smaller burst
    python bench/autoscale.py --no-cluster        # the trace replay only (no control plane)
    python bench/autoscale.py --json              # one JSON object on stdout

1. Burst: 1,000 pending replicas of mixed sizes (10 InferencePools: slices of 5-40 GB and 1-2
   whole GPUs, some interruptible) applied at once to an empty cluster with three pools (A10G spot,
   A10G on-demand, 8 x A100 on-demand; us-east-1 prices from ../shared/data/prices). Reports the
   seconds from apply to every node created and to every replica Running, the operator's API
   writes per replica (from the API server's audit log, by user agent), and its peak RSS.
2. Trace: a dynamic replay of Alibaba's openb trace (pods arrive at creation_time, leave at
   deletion_time; 150 days replayed in simulated time) through the autoscaler's own decision
   cores: placement, ``plan_scale_up`` for what does not fit, idle removal after idleTimeout.
   Best-effort (BE) pods are interruptible, so they may go to spot. A gpu_milli share becomes a
   memory slice of that share of a 24 GB GPU. Reports $ spent against the naive baseline (a whole
   on-demand GPU per pod from its arrival, never scaled down), a whole GPU per pod only while it
   runs, and an offline lower bound (every pod's memory at the cheapest $/MiB-hour it may use,
   for exactly its lifetime, as if packing were perfect and nodes appeared instantly).
3. The bill: the same replay with a reserved tier (``--reserved-nodes`` 8 x A100 nodes, an ODCR
   billed at on-demand whether used or not) and A10G spot prices that move daily between the
   snapshot's min and max, with a synthetic week at 1.5x on-demand. Three runs: gpucost (prepaid
   capacity ranked at what a node adds to the bill), a planner blind to the reservation, and no
   reservation. Reports effective $ (the bill), list $ (what ran at list prices), on-demand $ and
   the reservation's use, as ratios to gpucost.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gpucost import openb
from gpucost.api.common import duration_seconds
from gpucost.api.nodepool import ConsolidationPolicy, GPUNodePoolSpec
from gpucost.core.autoscale import (
    Batch,
    Disrupt,
    Evict,
    Launch,
    MarkConsolidatable,
    MarkIdle,
    MarkReplacing,
    Snapshot,
    Terminate,
    Timing,
    plan,
    pool_view,
)
from gpucost.core.consolidate import CONSOLIDATION
from gpucost.core.inventory import Allocation, Ask, FreeMap, GPUNode
from gpucost.core.packing.policies import DEFAULT_POLICY
from gpucost.core.placement import NoFit, place, place_planned
from gpucost.core.scaledown import NodePod, NodeState, Replacing
from gpucost.core.scaleup import NewNode, Offer, Pending, ScaleUpPlan, plan_scale_up
from gpucost.core.snapshot import pool_template_node

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PRICES = SHARED / "prices" / "aws_ec2_gpu_linux_ondemand_spot.csv"
TRACE = SHARED / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
REGION = "us-east-1"
A10G_MIB = 23028
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")
"""User agents of the operator's two clients (kopf's aiohttp session, the kubernetes client)."""


def prices(path: Path = PRICES) -> dict[str, dict[str, float]]:
    """On-demand and average spot $/h per instance type in REGION."""
    out = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["region"] == REGION and row["instance_type"] in ("g5.xlarge", "p4de.24xlarge"):
                out[row["instance_type"]] = {
                    "on-demand": float(row["ondemand_usd_hr"]),
                    "spot": float(row["spot_avg_usd_hr"]),
                    "spot-min": float(row["spot_min_usd_hr"]),
                    "spot-max": float(row["spot_max_usd_hr"]),
                }
    return out


def pool_specs(
    price: dict[str, dict[str, float]], idle_timeout: str = "10m"
) -> dict[str, GPUNodePoolSpec]:
    def spec(
        instance: str, capacity: str, model: str, mib: int, gpus: int, cpu: str, memory: str
    ) -> GPUNodePoolSpec:
        return GPUNodePoolSpec.model_validate(
            {
                "instanceType": instance,
                "capacityType": capacity,
                "pricePerHour": price[instance][capacity],
                "gpu": {"model": model, "memoryMiB": mib, "count": gpus},
                "cpu": cpu,
                "memory": memory,
                "minNodes": 0,
                "maxNodes": 2000,
                "idleTimeout": idle_timeout,
            }
        )

    return {
        "a10g-spot": spec("g5.xlarge", "spot", "NVIDIA-A10G", A10G_MIB, 1, "4", "16Gi"),
        "a10g-on-demand": spec("g5.xlarge", "on-demand", "NVIDIA-A10G", A10G_MIB, 1, "4", "16Gi"),
        "a100-on-demand": spec(
            "p4de.24xlarge", "on-demand", "NVIDIA-A100-SXM4-80GB", 81920, 8, "96", "1152Gi"
        ),
    }


# ---------------------------------------------------------------------------------------------
# Part 2: the openb trace through the decision cores


@dataclass
class TraceResult:
    pods: int
    unplaceable: int
    launches: int
    peak_nodes: int
    consolidations: int
    dollars: float
    naive_dollars: float
    whole_gpu_dollars: float
    lower_bound_dollars: float
    spot_share: float
    seconds: float
    by_pool: dict[str, float] = field(default_factory=dict)
    node_hours: dict[str, float] = field(default_factory=dict)
    span_hours: float = 0.0


def ask_of(task: openb.TracedTask, qos: str) -> Ask | None:
    t = task.task
    if not t.gpus:
        return None
    kinds = frozenset({"spot", "on-demand"}) if qos == "BE" else frozenset({"on-demand"})
    if t.gpu_milli < 1000:
        return Ask(memory_mib=max(1, t.gpu_milli * A10G_MIB // 1000), capacity_types=kinds)
    return Ask(gpus=t.gpus, capacity_types=kinds)


def _qos(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        return {row["name"]: row["qos"] for row in csv.DictReader(f)}


def _per_gpu_price(specs: dict[str, GPUNodePoolSpec], ask: Ask, kinds: frozenset[str]) -> float:
    """The cheapest $/GPU-hour of a pool whose node can hold the ask (for the whole-GPU
    baselines)."""
    return min(
        s.price_per_hour / s.gpu.count
        for s in specs.values()
        if s.capacity_type in kinds
        and s.gpu.count >= (ask.gpus or 1)
        and s.gpu.memory_mib >= (ask.memory_mib or 0)
    )


def _lower_bound_rate(specs: dict[str, GPUNodePoolSpec], ask: Ask) -> float:
    allowed = [s for s in specs.values() if s.capacity_type in ask.capacity_types]
    if ask.gpus is not None:
        return ask.gpus * min(
            s.price_per_hour / s.gpu.count for s in allowed if s.gpu.count >= ask.gpus
        )
    return (ask.memory_mib or 0) * min(
        s.price_per_hour / (s.gpu.count * s.gpu.memory_mib)
        for s in allowed
        if s.gpu.memory_mib >= (ask.memory_mib or 0)
    )


TRACE_TIMING = Timing(batch_idle=0.0, batch_max=0.0, reservation=30.0, cooldown=300.0)
"""The trace's time scale is hours: a batch window of a second would only add looks."""
CONSOLIDATION_PACE = 300.0
"""Simulated seconds between consolidation looks (and at every time one is due)."""


@dataclass
class SimNode:
    node: GPUNode
    launched: float
    accounted: float = 0.0
    """Billed up to here (a price move bills what ran before it at the old price)."""
    idle_since: float | None = None
    consolidatable_since: float | None = None
    replacing: Replacing | None = None
    disruption: str | None = None


class TraceSim:
    """The operator's own planner (``core.autoscale.plan``) on a simulated cluster: this class is
    only its executor and the replicas' placer, as the operator's executor and InferencePool
    handler are on a real one. Nodes boot instantly (the trace's time scale is hours); a look runs
    at every arrival and departure and whenever the planner says something falls due."""

    def __init__(self, specs: dict[str, GPUNodePoolSpec], policy: str, blind: bool = False) -> None:
        """``blind``: plan as if reserved capacity were ordinary on-demand capacity (ranked at its
        list price, idle nodes removed): a planner that does not know what is prepaid."""
        self.specs, self.policy, self.blind = dict(specs), policy, blind
        self.nodes: dict[str, SimNode] = {}
        self.held: dict[int, list[Allocation]] = {}
        self.asks: dict[int, Ask] = {}
        self.pending: dict[int, Ask] = {}
        self.free = FreeMap()
        self.spent: dict[str, float] = defaultdict(float)
        """List price of what ran, per pool."""
        self.node_hours: dict[str, float] = defaultdict(float)
        self.batch = Batch()
        self.launches = self.peak = self.unplaceable = self.consolidations = self.seq = 0
        self.last_consolidation = float("-inf")

    def arrive(self, i: int, ask: Ask) -> None:
        self.pending[i] = ask

    def leave(self, i: int) -> None:
        self.pending.pop(i, None)
        self._free(i)
        self.asks.pop(i, None)

    def _free(self, i: int) -> None:
        for a in self.held.pop(i, []):
            self.free.free[(a.node, a.gpu_index)] += a.memory_mib

    def look(self, at: float, due: bool = False) -> float | None:
        """Plan and apply until the cluster settles at ``at``; when the next look is due."""
        may_consolidate = due or at - self.last_consolidation >= CONSOLIDATION_PACE
        for _ in range(100):
            self._place(at)
            decision = plan(self._snapshot(at), self.batch, TRACE_TIMING, may_consolidate)
            self.batch = decision.batch
            if may_consolidate:
                self.last_consolidation, may_consolidate = at, False
            for owner in decision.scale_up.unfit if decision.scale_up else {}:
                self.unplaceable += self.pending.pop(int(owner), None) is not None
            if not self._apply(decision.commands, at):
                return decision.wake_at
        raise RuntimeError(f"the planner did not settle at t={at}")

    def _place(self, at: float) -> None:
        """What the InferencePool handler does: slots a plan bought first, then the policy."""
        open_ = [n.node for n in self.nodes.values() if n.disruption is None]
        planned = [n for n in open_ if n.slots]
        rest = [n for n in open_ if not n.held(at)]
        for i, ask in sorted(self.pending.items()):
            # One pod per owner here: a pending pod fills none of its slots yet.
            placed = place_planned(ask, planned, str(i), self.free, Counter()) or place(
                ask, rest, self.free, self.policy
            )
            if isinstance(placed, NoFit):
                continue
            taken = placed.memory_mib // len(placed.gpu_indices)
            self.held[i] = [Allocation(placed.node, g, taken) for g in placed.gpu_indices]
            self.asks[i] = self.pending.pop(i)

    def _snapshot(self, at: float) -> Snapshot:
        on: dict[str, list[int]] = defaultdict(list)
        for i, allocs in self.held.items():
            on[allocs[0].node].append(i)
        counts = Counter(n.node.pool for n in self.nodes.values())
        states = [
            NodeState(
                name,
                n.node.pool,
                True,
                tuple(NodePod("trace", str(i), True) for i in on.get(name, ())),
                n.idle_since,
                n.disruption,
                consolidatable_since=n.consolidatable_since,
                replacing=n.replacing,
                reserved_until=n.node.reserved_until,
                reserved_for=n.node.reserved_for,
            )
            for name, n in self.nodes.items()
        ]
        return Snapshot(
            now=at,
            pools={
                name: pool_view(name, self._planned(spec), counts[name], 0, now=at)
                for name, spec in self.specs.items()
            },
            nodes=[replace(n.node, schedulable=n.disruption is None) for n in self.nodes.values()],
            states=states,
            held=[a for allocs in self.held.values() for a in allocs],
            pending=[Pending(str(i), ask) for i, ask in sorted(self.pending.items())],
            movable={name: [(str(i), self.asks[i]) for i in pods] for name, pods in on.items()},
            policy=self.policy,
        )

    def _planned(self, spec: GPUNodePoolSpec) -> GPUNodePoolSpec:
        if not self.blind or spec.reserved_nodes is None:
            return spec
        update = {"capacity_type": "on-demand", "reserved_nodes": None}
        return spec.model_copy(update={**update, "max_nodes": spec.reserved_nodes})

    def move_price(self, pool: str, price: float, at: float) -> None:
        """The pool's price changes at ``at``: what ran before is billed at the old one."""
        for n in self.nodes.values():
            if n.node.pool == pool:
                self._accrue(n, at)
                n.node = replace(n.node, price_per_hour=price)
        self.specs[pool] = self.specs[pool].model_copy(update={"price_per_hour": price})

    def _accrue(self, n: SimNode, until: float) -> None:
        self.spent[n.node.pool] += (until - n.accounted) / 3600 * n.node.price_per_hour
        self.node_hours[n.node.pool] += (until - n.accounted) / 3600
        n.accounted = until

    def _apply(self, commands: list, at: float) -> bool:
        """True when the cluster changed (another look at the same instant may decide more)."""
        changed = False
        for c in commands:
            if isinstance(c, MarkIdle):
                self.nodes[c.node].idle_since = c.since
            elif isinstance(c, MarkConsolidatable):
                self.nodes[c.node].consolidatable_since = c.since
            elif isinstance(c, MarkReplacing):
                self.nodes[c.node].replacing = (
                    Replacing(c.since, c.message) if c.since is not None else None
                )
                changed = True
            elif isinstance(c, Disrupt):
                node = self.nodes[c.disruption.node]
                node.disruption, node.replacing, changed = c.disruption.reason, None, True
                self.consolidations += c.disruption.reason == CONSOLIDATION
            elif isinstance(c, Evict):
                i = int(c.name)
                self._free(i)
                self.pending[i] = self.asks.pop(i)
                changed = True
            elif isinstance(c, Terminate):
                self._remove(c.node, at)
                changed = True
            elif isinstance(c, Launch):
                for new in c.nodes:
                    self._launch(new, c.reserved_until, at)
                changed = True
        return changed

    def _launch(self, new: NewNode, until: float, at: float) -> None:
        self.seq += 1
        template = pool_template_node(new.pool, self.specs[new.pool])
        slots = tuple((s.owner, s.gpu_indices) for s in new.slots)
        owners = frozenset(s.owner for s in new.slots)
        node = replace(
            template,
            name=f"{new.pool}-{self.seq}",
            reserved_for=owners,
            reserved_until=until,
            slots=slots,
        )
        self.nodes[node.name] = SimNode(node, at, at)
        self.free.free.update({(node.name, g.index): g.memory_mib for g in node.gpus})
        self.launches += 1
        self.peak = max(self.peak, len(self.nodes))

    def _remove(self, name: str, until: float) -> None:
        n = self.nodes.pop(name)
        self._accrue(n, until)
        for g in n.node.gpus:
            self.free.free.pop((name, g.index), None)

    def finish(self, end: float) -> None:
        for name in list(self.nodes):
            n = self.nodes[name]
            timeout = duration_seconds(self.specs[n.node.pool].idle_timeout)
            self._remove(
                name, min(end, (n.idle_since if n.idle_since is not None else end) + timeout)
            )


Move = tuple[float, str, float]
"""(seconds into the trace, pool, its new $/node-hour)."""


def replay_trace(
    path: Path,
    specs: dict[str, GPUNodePoolSpec],
    policy: str,
    consolidate: bool = True,
    progress: Progress | None = None,
    moves: Sequence[Move] = (),
    blind: bool = False,
    label: str = "",
) -> TraceResult:
    started = time.perf_counter()
    qos = _qos(path)
    pods = [(t, a) for t in openb.read_pods(path) if (a := ask_of(t, qos[t.task.name])) is not None]
    pods = [
        (t, a)
        for t, a in pods
        if t.created is not None and t.deleted is not None and t.deleted > t.created
    ]
    events = sorted(
        [(t.created, 1, i) for i, (t, _) in enumerate(pods)]
        + [(t.deleted, 0, i) for i, (t, _) in enumerate(pods)]
    )
    start, end = float(events[0][0]), float(events[-1][0])
    events = sorted(events + [(start + at, 2, k) for k, (at, _, _) in enumerate(moves)])
    if not consolidate:
        specs = {
            k: v.model_copy(update={"consolidation_policy": ConsolidationPolicy.WHEN_EMPTY.value})
            for k, v in specs.items()
        }
    sim = TraceSim(specs, policy, blind)
    task = (
        progress.add_task(
            label or f"openb trace replay ({'with' if consolidate else 'without'} consolidation)",
            total=len(events),
        )
        if progress
        else None
    )
    wake: float | None = None
    for at, kind, i in events:
        if progress is not None and task is not None:
            progress.advance(task)
        while wake is not None and wake < at:
            wake = sim.look(wake, due=True)
        if kind == 2:
            _, pool, price = moves[i]
            sim.move_price(pool, price, float(at))
        elif kind == 0:
            sim.leave(i)
        else:
            sim.arrive(i, pods[i][1])
        wake = sim.look(float(at))
    sim.finish(end)

    def lifetime_h(t: openb.TracedTask) -> float:
        return ((t.deleted or 0) - (t.created or 0)) / 3600

    on_demand = frozenset({"on-demand"})
    naive = sum(
        (end - (t.created or 0)) / 3600 * (a.gpus or 1) * _per_gpu_price(specs, a, on_demand)
        for t, a in pods
    )
    whole = sum(
        lifetime_h(t) * (a.gpus or 1) * _per_gpu_price(specs, a, a.capacity_types) for t, a in pods
    )
    lower = sum(lifetime_h(t) * _lower_bound_rate(specs, a) for t, a in pods)
    total = sum(sim.spent.values())
    spot = sum(v for k, v in sim.spent.items() if specs[k].capacity_type == "spot")
    return TraceResult(
        len(pods),
        sim.unplaceable,
        sim.launches,
        sim.peak,
        sim.consolidations,
        total,
        naive,
        whole,
        lower,
        spot / total if total else 0.0,
        time.perf_counter() - started,
        dict(sim.spent),
        dict(sim.node_hours),
        (end - start) / 3600,
    )


# ---------------------------------------------------------------------------------------------
# Part 3: the bill, with a reserved tier and spot prices that move

SPIKE_DAYS = (30.0, 37.0)
"""A week in which A10G spot costs 1.5x on-demand (spot capacity short): synthetic, as
../shared holds no spot price history; outside it the price alternates daily between the
snapshot's min and max."""


def billing_specs(
    price: dict[str, dict[str, float]], reserved_nodes: int
) -> dict[str, GPUNodePoolSpec]:
    """The trace's three pools plus reserved 8 x A100 nodes (an ODCR: billed at on-demand)."""
    specs = pool_specs(price)
    a100 = specs["a100-on-demand"]
    specs["a100-reserved"] = GPUNodePoolSpec.model_validate(
        {
            **a100.wire(),
            "capacityType": "reserved",
            "reservedNodes": reserved_nodes,
            "maxNodes": reserved_nodes,
        }
    )
    return specs


def spot_moves(price: dict[str, dict[str, float]], days: float) -> list[Move]:
    g5 = price["g5.xlarge"]
    out: list[Move] = []
    for day in range(int(days) + 1):
        if SPIKE_DAYS[0] <= day < SPIKE_DAYS[1]:
            usd = 1.5 * g5["on-demand"]
        else:
            usd = g5["spot-min"] if day % 2 else g5["spot-max"]
        out.append((day * 86400.0, "a10g-spot", usd))
    return out


def bill(r: TraceResult, specs: dict[str, GPUNodePoolSpec]) -> dict[str, float]:
    """List $ (what ran, at list prices as they moved) and effective $ (the bill: reserved nodes
    paid for the whole span whether they ran or not), and the reservation's use."""
    reserved = {k: s for k, s in specs.items() if s.reserved_nodes is not None}
    paid_anyway = sum(
        (s.reserved_nodes or 0) * s.price_per_hour * r.span_hours for s in reserved.values()
    )
    used = sum(r.node_hours.get(k, 0.0) for k in reserved)
    capacity = sum((s.reserved_nodes or 0) * r.span_hours for s in reserved.values())
    return {
        "list_dollars": round(r.dollars, 2),
        "effective_dollars": round(
            sum(v for k, v in r.by_pool.items() if k not in reserved) + paid_anyway, 2
        ),
        "reservation_utilization": round(used / capacity, 4) if capacity else 0.0,
        "on_demand_dollars": round(
            sum(v for k, v in r.by_pool.items() if specs[k].capacity_type == "on-demand"), 2
        ),
    }


def replay_bills(
    path: Path, price: dict[str, dict[str, float]], reserved_nodes: int, progress: Progress
) -> dict[str, Any]:
    """Three runs on the same trace and price moves: gpucost (prepaid capacity used first),
    a planner blind to what is prepaid, and no reservation at all."""
    specs = billing_specs(price, reserved_nodes)
    moves = spot_moves(price, _span_days(path))
    runs = {  # name: (pools, planner blind to prepaid capacity, label)
        "gpucost": (specs, False, "bill: gpucost, reservation-aware"),
        "blind": (specs, True, "bill: planner blind to the reservation"),
        "no_reservation": (pool_specs(price), False, "bill: no reservation"),
    }
    out: dict[str, Any] = {
        "reserved_nodes": reserved_nodes,
        "spike_days": list(SPIKE_DAYS),
        "runs": {
            name: bill(
                replay_trace(path, s, DEFAULT_POLICY, True, progress, moves, blind, label), s
            )
            for name, (s, blind, label) in runs.items()
        },
    }
    ours = out["runs"]["gpucost"]["effective_dollars"]
    for k, v in out["runs"].items():
        v["ratio_to_gpucost"] = round(v["effective_dollars"] / ours, 3)
    return out


# ---------------------------------------------------------------------------------------------
# Part 1: a burst of replicas on the real control plane


BURST = [  # (name, share of replicas, gpu ask, capacity types)
    ("chat-7b", 0.20, {"memoryMiB": 16000}, ["spot", "on-demand"]),
    ("embed", 0.15, {"memoryMiB": 5000}, ["spot", "on-demand"]),
    ("rerank", 0.10, {"memoryMiB": 8000}, ["on-demand"]),
    ("chat-13b", 0.10, {"memoryMiB": 30000}, ["on-demand"]),
    ("vision", 0.10, {"memoryMiB": 12000}, ["spot", "on-demand"]),
    ("asr", 0.10, {"memoryMiB": 10000}, ["on-demand"]),
    ("chat-34b", 0.08, {"memoryMiB": 40000}, ["on-demand"]),
    ("batch-score", 0.07, {"memoryMiB": 20000}, ["spot", "on-demand"]),
    ("chat-70b", 0.05, {"gpus": 2}, ["on-demand"]),
    ("finetune-eval", 0.05, {"gpus": 1}, ["spot", "on-demand"]),
]

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


@dataclass
class BurstResult:
    replicas: int
    nodes: int
    nodes_by_pool: dict[str, int]
    seconds_to_nodes: float
    seconds_to_running: float
    operator_writes: int
    writes_by_resource: dict[str, int]
    operator_peak_rss_mib: float
    dollars_per_hour: float
    naive_dollars_per_hour: float
    planned_dollars_per_hour: float
    """What one scale-up plan for the whole burst would cost: the floor the placer should reach."""
    floor_seconds: float | None
    """The same nodes and pods created by a plain script on the same control plane, to Running."""
    operator_cpu_seconds: float


def _rss_peak_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _operator_writes(audit_log: Path) -> Counter[str]:
    """Writes by the operator's user agents per resource, over the log and the files the API
    server rotated it into (a 5,000-replica run rotates it)."""
    by: Counter[str] = Counter()
    for path in sorted(audit_log.parent.glob(f"{audit_log.stem}*{audit_log.suffix}")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            agent = event.get("userAgent", "")
            if event.get("stage") != "ResponseComplete" or not agent.startswith(OPERATOR_AGENTS):
                continue
            ref = event.get("objectRef") or {}
            sub = "/" + ref["subresource"] if ref.get("subresource") else ""
            by[ref.get("resource", "?") + sub] += 1
    return by


def max_nodes(replicas: int) -> int:
    """Each pool's maxNodes in the burst: never the limit (5,000 replicas take ~2,000 A10Gs)."""
    return max(400, replicas // 2)


def burst_timeout(replicas: int) -> float:
    """Seconds a burst (or its floor) may take before the run fails: 10 min per 1,000 replicas."""
    return max(600.0, 0.6 * replicas)


def burst_plan(specs: dict[str, GPUNodePoolSpec], counts: list[int]) -> ScaleUpPlan:
    """One scale-up plan for the whole burst: what the operator should buy; the floor's nodes."""
    headroom = max_nodes(sum(counts))
    offers = [Offer(name, pool_template_node(name, s), headroom) for name, s in specs.items()]
    pending = [
        Pending(
            name,
            Ask(
                memory_mib=gpu.get("memoryMiB"),
                gpus=gpu.get("gpus"),
                capacity_types=frozenset(kinds),
            ),
            n,
        )
        for (name, _, gpu, kinds), n in zip(BURST, counts)
    ]
    return plan_scale_up(pending, offers)


def _planned(specs: dict[str, GPUNodePoolSpec], counts: list[int]) -> float:
    plan = burst_plan(specs, counts)
    return sum(specs[pool].price_per_hour * k for pool, k in plan.launches.items())


def burst_docs(replicas: int) -> tuple[list[int], list[dict]]:
    counts = [round(replicas * share) for _, share, _, _ in BURST]
    counts[0] += replicas - sum(counts)
    docs = [
        {
            "apiVersion": "gpucost.dev/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {
                "image": "example/server:1",
                "replicas": n,
                "maxReplicas": max(n, 1),
                "gpu": gpu,
                "capacityTypes": kinds,
            },
        }
        for (name, _, gpu, kinds), n in zip(BURST, counts)
    ]
    return counts, docs


def _running(kube, namespace: str) -> int:
    resp = kube.core.list_namespaced_pod(
        namespace, field_selector="status.phase=Running", _preload_content=False
    )
    return len(json.loads(resp.data)["items"])


def run_floor(cp, specs: dict[str, GPUNodePoolSpec], replicas: int, progress: Progress) -> float:
    """The floor on this control plane: the nodes one plan buys for the burst and the replica pods
    pinned where the plan put them, created by a plain script as fast as the API takes them
    (the same requests in flight as the operator), seconds until every pod is Running. No
    operator runs; the nodes and pods are removed again before it starts."""
    import kubernetes

    from gpucost import manifests
    from gpucost.adapters.kube import Kube
    from gpucost.adapters.kwok import fake_node, gpu_uuid
    from gpucost.api.inferencepool import InferencePoolSpec
    from gpucost.core.placement import Placement
    from gpucost.devcluster.controlplane import poll

    counts, docs = burst_docs(replicas)
    plan = burst_plan(specs, counts)
    pool_spec = {d["metadata"]["name"]: InferencePoolSpec.model_validate(d["spec"]) for d in docs}
    nodes, pods, ordinal = [], [], defaultdict(int)
    for i, new in enumerate(plan.new_nodes):
        name = f"floor-{new.pool}-{i}"
        nodes.append(fake_node(new.pool, specs[new.pool], name))
        gpu_mib = specs[new.pool].gpu.memory_mib
        for slot in new.slots:
            spec = pool_spec[slot.owner]
            mib = gpu_mib * len(slot.gpu_indices) if spec.gpu.gpus else spec.gpu.memory_mib
            where = Placement(
                name, slot.gpu_indices, tuple(gpu_uuid(name, g) for g in slot.gpu_indices), mib
            )
            pod = manifests.replica_pod(
                pool=slot.owner,
                namespace="floor",
                uid="floor",
                spec=spec,
                replica=ordinal[slot.owner],
                placement=where,
                node_pool=specs[new.pool],
            )
            del pod["metadata"]["ownerReferences"]  # no owner to collect them
            pods.append(pod)
            ordinal[slot.owner] += 1
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig)))
    cp.kubectl("create", "namespace", "floor")
    cp.wait_namespace("floor")
    step = progress.add_task(
        f"floor: {len(nodes)} nodes, {len(pods)} pods by a plain script", total=len(pods)
    )
    started = time.perf_counter()
    kube.create_nodes(nodes)
    kube.create_pods(pods)
    poll(
        "every floor pod Running",
        lambda: (n := _running(kube, "floor")) >= len(pods) or progress.update(step, completed=n),
        burst_timeout(replicas),
        interval=0.5,
    )
    seconds = time.perf_counter() - started
    progress.update(step, description="floor: removing its pods and nodes")
    cp.kubectl("delete", "namespace", "floor", "--wait=true", timeout=burst_timeout(replicas))
    for node in nodes:
        kube.delete_node(node["metadata"]["name"])
    poll(
        "the floor's nodes gone",
        lambda: not [n for n in kube.nodes() if n["metadata"]["name"].startswith("floor-")],
        300,
    )
    progress.remove_task(step)
    return seconds


def run_burst(
    replicas: int,
    specs: dict[str, GPUNodePoolSpec],
    progress: Progress,
    logs: Path | None,
    reservation: float | None = None,
    with_floor: bool = True,
) -> BurstResult:
    from gpucost.devcluster import binaries
    from gpucost.devcluster.controlplane import ControlPlane, poll, reap_orphans
    from gpucost.devcluster.operatorproc import OperatorProcess

    binaries.require()
    # Beside the test clusters, so a run killed before its teardown is cleaned up by the next.
    clusters = binaries.cache_root() / "bench-clusters"
    reap_orphans(clusters)
    clusters.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="burst-files-", dir=clusters))
    policy = root / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    audit = root / "audit.log"
    cp = ControlPlane(
        f"burst-{uuid.uuid4().hex[:6]}",
        clusters,
        apiserver_args={"audit-policy-file": str(policy), "audit-log-path": str(audit)},
    )
    step = progress.add_task("starting the control plane", total=None)
    cp.start()
    operator = OperatorProcess(
        cp.kubeconfig,
        root / "operator.log",
        resync_seconds=30.0,
        autoscale_seconds=5.0,  # the defaults
        env={"GPUCOST_RESERVATION_SECONDS": str(reservation)} if reservation else {},
    )
    try:
        repo = Path(__file__).resolve().parents[1]
        cp.kubectl("apply", "-f", str(repo / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for name, spec in specs.items():
            body = spec.wire() | {"maxNodes": max_nodes(replicas), "idleTimeout": "1h"}
            cp.kubectl(
                "apply",
                "-f",
                "-",
                input=yaml.safe_dump(
                    {
                        "apiVersion": "gpucost.dev/v1alpha1",
                        "kind": "GPUNodePool",
                        "metadata": {"name": name},
                        "spec": body,
                    }
                ),
            )
        floor = run_floor(cp, specs, replicas, progress) if with_floor else None
        operator.start()
        cp.kubectl("create", "namespace", "bench")
        cp.wait_namespace("bench")
        counts, docs = burst_docs(replicas)
        writes_before = _operator_writes(audit)  # the floor's script uses the same client
        progress.update(
            step,
            description=f"{replicas} replicas applied; waiting for nodes",
            total=replicas,
            completed=0,
        )
        t0 = time.perf_counter()
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

        def running() -> int:
            out = cp.kubectl(
                "get",
                "pods",
                "-n",
                "bench",
                "--field-selector=status.phase=Running",
                "-o",
                "name",
                check=False,
            ).stdout
            return len(out.split())

        def unplaced() -> int:
            items = json.loads(
                cp.kubectl("get", "inferencepools", "-n", "bench", "-o", "json").stdout
            )["items"]
            return sum(
                int(
                    (o.get("status") or {}).get("unplacedReplicas", 1 if not o.get("status") else 0)
                )
                for o in items
            )

        t_nodes = t_running = None
        deadline = t0 + burst_timeout(replicas)
        while time.perf_counter() < deadline:
            done = running()
            progress.update(
                step, completed=done, description=f"replicas Running ({done}/{replicas})"
            )
            if t_nodes is None and unplaced() == 0:
                t_nodes = time.perf_counter() - t0
            if done >= replicas:
                t_running = time.perf_counter() - t0
                t_nodes = t_nodes if t_nodes is not None else t_running
                break
            time.sleep(0.5)  # a progress poll, not synchronisation: the deadline bounds it
        if t_running is None:
            raise RuntimeError(
                f"only {running()}/{replicas} replicas Running after "
                f"{burst_timeout(replicas):.0f} s; operator log {operator.log}"
            )
        poll("the audit log to flush", lambda: audit.exists(), 10)
        by = _operator_writes(audit) - writes_before
        writes = sum(by.values())
        assert operator.proc is not None
        rss = _rss_peak_mib(operator.proc.pid)
        cpu = _cpu_seconds(operator.proc.pid)
        nodes = json.loads(cp.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        pools = [(n["metadata"].get("labels") or {}).get("gpucost.dev/nodepool") for n in nodes]
        cost = sum(specs[p].price_per_hour for p in pools if p in specs)
        on_demand = frozenset({"on-demand"})
        asks = [
            Ask(memory_mib=gpu.get("memoryMiB"), gpus=gpu.get("gpus")) for _, _, gpu, _ in BURST
        ]
        naive = sum(
            n * (a.gpus or 1) * _per_gpu_price(specs, a, on_demand) for a, n in zip(asks, counts)
        )
        per_pool = {name: pools.count(name) for name in specs}
        return BurstResult(
            replicas,
            sum(per_pool.values()),
            per_pool,
            t_nodes,
            t_running,
            writes,
            dict(by.most_common()),
            rss,
            cost,
            naive,
            _planned(specs, counts),
            floor,
            cpu,
        )
    finally:
        progress.update(step, description="stopping the control plane")
        operator.stop()
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(operator.log, logs / "operator.log")
            shutil.copytree(cp.logs, logs / "control-plane", dirs_exist_ok=True)
        cp.stop()
        shutil.rmtree(root, ignore_errors=True)
        progress.remove_task(step)


def render(console: Console, report: dict) -> None:
    if "burst" in report:
        b = report["burst"]
        table = Table(
            title=f"Burst: {b['replicas']} replicas on an empty cluster (3 pools, real control "
            "plane)"
        )
        for col in (
            "nodes",
            "to nodes (s)",
            "to Running (s)",
            "floor (s)",
            "ratio to floor",
            "writes / replica",
            "CPU s",
            "peak RSS (MiB)",
            "$/h",
            "$/h one plan",
            "ratio to plan",
            "ratio to naive",
        ):
            table.add_column(col, justify="right")
        floor = b.get("floor_seconds")
        table.add_row(
            str(b["nodes"]),
            f"{b['seconds_to_nodes']:.1f}",
            f"{b['seconds_to_running']:.1f}",
            f"{floor:.1f}" if floor else "-",
            f"{b['ratio_to_floor']:.2f}" if floor else "-",
            f"{b['writes_per_replica']:.2f}",
            f"{b['operator_cpu_seconds']:.0f}",
            f"{b['operator_peak_rss_mib']:.0f}",
            f"{b['dollars_per_hour']:.2f}",
            f"{b['planned_dollars_per_hour']:.2f}",
            f"{b['cost_ratio_to_plan']:.3f}",
            f"{b['cost_ratio_to_naive']:.3f}",
        )
        console.print(table)
        console.print(
            "nodes by pool: " + ", ".join(f"{k} {v}" for k, v in b["nodes_by_pool"].items())
        )
        console.print(
            "operator writes by resource: "
            + ", ".join(f"{k} {v}" for k, v in b["writes_by_resource"].items())
        )
    if "trace" in report:
        t = report["trace"]
        table = Table(
            title=f"openb trace replay ({t['pods']} GPU pods, {t['days']:.0f} days, policy "
            f"{t['policy']})"
        )
        for col in ("", "$", "ratio to gpucost"):
            table.add_column(col, justify="right")
        for label, key in (
            ("gpucost autoscaler", "dollars"),
            ("same, consolidation off", "no_consolidation_dollars"),
            ("naive: whole on-demand GPU per pod, never scaled down", "naive_dollars"),
            ("whole GPU per pod while it runs", "whole_gpu_dollars"),
            ("offline lower bound", "lower_bound_dollars"),
        ):
            table.add_row(label, f"{t[key]:,.0f}", f"{t[key] / t['dollars']:.3f}")
        console.print(table)
        console.print(
            f"launches {t['launches']}, consolidations {t['consolidations']}, peak nodes "
            f"{t['peak_nodes']}, "
            f"unplaceable {t['unplaceable']}, "
            f"spot share of $ {t['spot_share']:.1%}, replay {t['seconds']:.1f}s"
        )


def render_bill(console: Console, b: dict[str, Any]) -> None:
    table = Table(
        title=f"The bill: {b['reserved_nodes']} reserved 8 x A100 nodes, A10G spot moving daily "
        f"(1.5x on-demand on days {b['spike_days'][0]:.0f}-{b['spike_days'][1]:.0f})"
    )
    for col in ("run", "effective $", "list $", "on-demand $", "reservation used", "ratio"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, r in b["runs"].items():
        table.add_row(
            name,
            f"{r['effective_dollars']:,.0f}",
            f"{r['list_dollars']:,.0f}",
            f"{r['on_demand_dollars']:,.0f}",
            f"{r['reservation_utilization']:.1%}",
            f"{r['ratio_to_gpucost']:.3f}",
        )
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--no-cluster", action="store_true", help="skip the control-plane burst")
    parser.add_argument("--no-trace", action="store_true", help="skip the trace replay")
    parser.add_argument(
        "--no-bill", action="store_true", help="skip the reserved-tier and price-move replays"
    )
    parser.add_argument(
        "--reserved-nodes", type=int, default=4, help="reserved 8 x A100 nodes in the bill part"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the plain-script floor before the burst"
    )
    parser.add_argument(
        "--reservation",
        type=float,
        help="the operator's GPUCOST_RESERVATION_SECONDS (default its own)",
    )
    parser.add_argument(
        "--logs", type=Path, help="keep the burst's operator and control-plane logs here"
    )
    args = parser.parse_args(argv)
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 140)
    specs = pool_specs(prices())
    report: dict = {
        "prices": {
            k: {
                "instance": s.instance_type,
                "capacity": s.capacity_type,
                "usd_per_hour": s.price_per_hour,
            }
            for k, s in specs.items()
        }
    }
    try:
        with Progress(console=console, transient=True) as progress:
            if not args.no_trace:
                r = replay_trace(args.trace, specs, DEFAULT_POLICY, True, progress)
                plain = replay_trace(args.trace, specs, DEFAULT_POLICY, False, progress)
                report["trace"] = {
                    "trace": args.trace.name,
                    "policy": DEFAULT_POLICY,
                    **r.__dict__,
                    "no_consolidation_dollars": plain.dollars,
                    "ratio_no_consolidation_to_ours": round(plain.dollars / r.dollars, 3),
                    "days": 0.0 if not r.pods else _span_days(args.trace),
                    "ratio_naive_to_ours": round(r.naive_dollars / r.dollars, 3),
                    "ratio_whole_gpu_to_ours": round(r.whole_gpu_dollars / r.dollars, 3),
                    "ratio_ours_to_lower_bound": round(r.dollars / r.lower_bound_dollars, 3),
                }
            if not args.no_bill:
                report["bill"] = replay_bills(args.trace, prices(), args.reserved_nodes, progress)
            if not args.no_cluster:
                b = run_burst(
                    args.replicas, specs, progress, args.logs, args.reservation, not args.no_floor
                )
                report["burst"] = {
                    **b.__dict__,
                    "writes_per_replica": round(b.operator_writes / b.replicas, 3),
                    "cost_ratio_to_naive": round(b.dollars_per_hour / b.naive_dollars_per_hour, 3),
                    "cost_ratio_to_plan": round(b.dollars_per_hour / b.planned_dollars_per_hour, 3),
                    "ratio_to_floor": round(b.seconds_to_running / b.floor_seconds, 2)
                    if b.floor_seconds
                    else None,
                    "operator_cpu_seconds_per_replica": round(
                        b.operator_cpu_seconds / b.replicas, 4
                    ),
                    "operator_rss_mib_per_replica": round(b.operator_peak_rss_mib / b.replicas, 4),
                }
    except (openb.TraceError, RuntimeError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        render(console, report)
        if "bill" in report:
            render_bill(console, report["bill"])
    return 0


def _span_days(path: Path) -> float:
    times = [t for p in openb.read_pods(path) for t in (p.created, p.deleted) if t is not None]
    return (max(times) - min(times)) / 86400


if __name__ == "__main__":
    sys.exit(main())
