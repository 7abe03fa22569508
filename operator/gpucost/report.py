"""``gpucost report``: what GPUs cost, by namespace, workload and pool: now and in total from the
statuses, and over a past period from Prometheus (``--prometheus-url``, ``--period``, ``--png``).

The savings column compares with the naive way to run the same replicas: a whole on-demand GPU
each (k whole GPUs for a k-GPU replica) at the cheapest on-demand pool's $/GPU-hour whose GPU can
hold the ask, with nothing shared and nothing on spot. Pools serving a compressed model
(``modelFrom``) also show what the smaller slice saves per hour at their current replicas.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from gpucost.adapters.prometheus import CostHistory
from gpucost.api.common import GPUAsk, duration_seconds
from gpucost.api.compressionjob import CompressionJobSpec, CompressionJobStatus
from gpucost.api.inferencepool import InferencePoolSpec, InferencePoolStatus
from gpucost.api.nodepool import GPUNodePoolSpec, GPUNodePoolStatus
from gpucost.core.tokens import Usage, rollup


@dataclass(frozen=True)
class WorkloadRow:
    kind: str
    namespace: str
    name: str
    replicas: int
    per_hour: float
    accumulated: float
    naive_per_hour: float | None


@dataclass(frozen=True)
class PoolRow:
    name: str
    capacity_type: str
    nodes: int
    per_hour: float
    idle_per_hour: float
    accumulated: float
    idle_accumulated: float
    list_price: float | None = None
    """Per node-hour, as priced (spec or price source)."""
    effective_price: float | None = None
    """Per running node-hour, reserved or committed capacity paid anyway included."""
    utilization: float | None = None
    """Of the reservation or commitment; None without one."""
    warning: str | None = None
    """Paid-for capacity unused while on-demand is bought elsewhere."""


@dataclass(frozen=True)
class CompressionRow:
    """A pool serving a CompressionJob's output, priced per replica before and after."""

    namespace: str
    pool: str
    job: str
    scheme: str | None
    replicas: int
    before_per_replica_hour: float
    after_per_replica_hour: float

    @property
    def saving_per_hour(self) -> float:
        return (self.before_per_replica_hour - self.after_per_replica_hour) * self.replicas


@dataclass(frozen=True)
class TokenRow:
    """A serving pool's tokens and cost over its status' trailing window."""

    namespace: str
    pool: str
    model: str
    usage: Usage


@dataclass
class Report:
    workloads: list[WorkloadRow] = field(default_factory=list)
    pools: list[PoolRow] = field(default_factory=list)
    compression: list[CompressionRow] = field(default_factory=list)
    tokens: list[TokenRow] = field(default_factory=list)

    def per_million_tokens(self) -> dict[str, dict[str, Usage]]:
        """Per pool, model and namespace: each group's cost over its tokens."""
        return {
            "pool": rollup((f"{t.namespace}/{t.pool}", t.usage) for t in self.tokens),
            "model": rollup((t.model, t.usage) for t in self.tokens),
            "namespace": rollup((t.namespace, t.usage) for t in self.tokens),
        }

    @property
    def namespaces(self) -> dict[str, tuple[float, float]]:
        out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for w in self.workloads:
            out[w.namespace][0] += w.per_hour
            out[w.namespace][1] += w.accumulated
        return {ns: (v[0], v[1]) for ns, v in sorted(out.items())}

    def totals(self) -> dict[str, float]:
        naive = sum(w.naive_per_hour or 0.0 for w in self.workloads)
        spend = sum(p.per_hour for p in self.pools)
        return {
            "per_hour": spend,
            "idle_per_hour": sum(p.idle_per_hour for p in self.pools),
            "accumulated": sum(p.accumulated for p in self.pools),
            "naive_per_hour": naive,
            "savings_per_hour": naive - spend,
            "compression_savings_per_hour": sum(c.saving_per_hour for c in self.compression),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "workloads": [asdict(w) for w in self.workloads],
            "namespaces": {
                ns: {"per_hour": h, "accumulated": a} for ns, (h, a) in self.namespaces.items()
            },
            "pools": [asdict(p) for p in self.pools],
            "compression": [
                {**asdict(c), "saving_per_hour": c.saving_per_hour} for c in self.compression
            ],
            "totals": self.totals(),
            "usd_per_million_tokens": {
                by: {
                    k: {"tokens": u.tokens, "cost": u.cost, "usd_per_million": u.usd_per_million}
                    for k, u in groups.items()
                }
                for by, groups in self.per_million_tokens().items()
            },
        }


def naive_rate(gpu: GPUAsk, replicas: int, pools: list[GPUNodePoolSpec]) -> float | None:
    gpus = gpu.gpus or 1
    fits = [
        p.price_per_hour / p.gpu.count
        for p in pools
        if p.price_per_hour is not None
        and p.capacity_type == "on-demand"
        and p.gpu.count >= gpus
        and p.gpu.memory_mib >= (gpu.memory_mib or 0)
    ]
    return min(fits) * gpus * replicas if fits else None


S = TypeVar("S", bound=BaseModel)
St = TypeVar("St", bound=BaseModel)


def _parsed(obj: dict[str, Any], spec: type[S], status: type[St]) -> tuple[S, St] | None:
    """An object's spec and status, or None when either is invalid: its own status says why, and a
    report skips it."""
    try:
        return spec.model_validate(obj.get("spec") or {}), status.model_validate(
            obj.get("status") or {}
        )
    except ValidationError:
        return None


def build(
    inference_pools: list[dict[str, Any]],
    node_pools: list[dict[str, Any]],
    compression_jobs: Sequence[dict[str, Any]] = (),
) -> Report:
    report = Report()
    specs: list[GPUNodePoolSpec] = []
    for obj in node_pools:
        if (pool := _parsed(obj, GPUNodePoolSpec, GPUNodePoolStatus)) is None:
            continue
        spec, status = pool
        if (priced := spec.priced(status.price_per_hour)) is not None:
            specs.append(priced)
        report.pools.append(
            PoolRow(
                obj["metadata"]["name"],
                spec.capacity_type,
                status.nodes,
                status.cost_per_hour,
                status.idle_cost_per_hour,
                status.cost_accumulated,
                status.idle_cost_accumulated,
                status.price_per_hour,
                status.effective_price_per_hour,
                status.commitment_utilization,
                next(
                    (
                        c.message
                        for c in status.conditions
                        if c.type == "CommitmentUnused" and c.status == "True"
                    ),
                    None,
                ),
            )
        )
    for obj in inference_pools:
        if (ip := _parsed(obj, InferencePoolSpec, InferencePoolStatus)) is None:
            continue
        ip_spec, ip_status = ip
        meta = obj["metadata"]
        report.workloads.append(
            WorkloadRow(
                "InferencePool",
                meta["namespace"],
                meta["name"],
                ip_status.replicas,
                ip_status.cost_per_hour,
                ip_status.cost_accumulated,
                naive_rate(ip_spec.gpu, ip_spec.replicas, specs),
            )
        )
        if ip_status.tokens is not None:
            t = ip_status.tokens
            report.tokens.append(
                TokenRow(
                    meta["namespace"],
                    meta["name"],
                    ip_spec.served_model_name or meta["name"],
                    Usage(t.generated_tokens, t.cost, t.source),
                )
            )
        adopted = ip_status.adopted_model
        if (
            adopted is not None
            and adopted.cost_per_replica_hour_before is not None
            and adopted.cost_per_replica_hour_after is not None
        ):
            report.compression.append(
                CompressionRow(
                    meta["namespace"],
                    meta["name"],
                    adopted.compression_job,
                    adopted.scheme,
                    ip_status.replicas,
                    adopted.cost_per_replica_hour_before,
                    adopted.cost_per_replica_hour_after,
                )
            )
    for obj in compression_jobs:
        if (cj := _parsed(obj, CompressionJobSpec, CompressionJobStatus)) is None:
            continue
        cj_spec, cj_status = cj
        meta = obj["metadata"]
        running = int(cj_status.phase == "Running")  # naive: a whole GPU while the job runs
        report.workloads.append(
            WorkloadRow(
                "CompressionJob",
                meta["namespace"],
                meta["name"],
                running,
                cj_status.cost_per_hour,
                cj_status.cost_accumulated,
                naive_rate(cj_spec.gpu, running, specs),
            )
        )
    report.workloads.sort(key=lambda w: (w.namespace, w.kind, w.name))
    report.pools.sort(key=lambda p: p.name)
    return report


def _money(value: float | None) -> str:
    return f"{value:,.4f}" if value is not None else "-"


def render(console: Console, report: Report) -> None:
    table = Table(title="GPU cost by workload")
    for col in ("namespace", "kind", "workload", "replicas", "$/h", "$ so far", "$/h naive"):
        table.add_column(
            col, justify="left" if col in ("namespace", "kind", "workload") else "right"
        )
    for w in report.workloads:
        naive = f"{w.naive_per_hour:,.2f}" if w.naive_per_hour is not None else "-"
        table.add_row(
            w.namespace,
            w.kind,
            w.name,
            str(w.replicas),
            f"{w.per_hour:,.4f}",
            f"{w.accumulated:,.4f}",
            naive,
        )
    console.print(table)
    ns = Table(title="by namespace")
    for col in ("namespace", "$/h", "$ so far"):
        ns.add_column(col, justify="left" if col == "namespace" else "right")
    for name, (per_hour, total) in report.namespaces.items():
        ns.add_row(name, f"{per_hour:,.4f}", f"{total:,.4f}")
    console.print(ns)
    pools = Table(title="by GPUNodePool")
    cols = ("pool", "capacity", "nodes", "list $/node-h", "effective", "used", "$/h", "idle $/h")
    for col in (*cols, "$ so far", "idle $ so far"):
        pools.add_column(col, justify="left" if col in ("pool", "capacity") else "right")
    for p in report.pools:
        pools.add_row(
            p.name,
            p.capacity_type,
            str(p.nodes),
            _money(p.list_price),
            _money(p.effective_price),
            f"{p.utilization:.0%}" if p.utilization is not None else "-",
            f"{p.per_hour:,.2f}",
            f"{p.idle_per_hour:,.2f}",
            f"{p.accumulated:,.4f}",
            f"{p.idle_accumulated:,.4f}",
        )
    console.print(pools)
    for p in report.pools:
        if p.warning:
            console.print(f"[yellow]warning[/] {p.name}: {p.warning}")
    if report.compression:
        saved = Table(title="served compressed (modelFrom)")
        for col in ("namespace", "pool", "job", "scheme"):
            saved.add_column(col)
        for col in ("replicas", "$/h each before", "after", "saving $/h"):
            saved.add_column(col, justify="right")
        for c in report.compression:
            saved.add_row(
                c.namespace,
                c.pool,
                c.job,
                c.scheme or "-",
                str(c.replicas),
                f"{c.before_per_replica_hour:,.4f}",
                f"{c.after_per_replica_hour:,.4f}",
                f"{c.saving_per_hour:,.4f}",
            )
        console.print(saved)
    if report.tokens:
        window = Table(title="$ per million generated tokens (each pool's trailing window)")
        for col in ("by", "group", "tokens", "$", "$/1M tokens"):
            window.add_column(col, justify="left" if col in ("by", "group") else "right")
        for by, groups in report.per_million_tokens().items():
            for key, u in sorted(groups.items()):
                per_m = f"{u.usd_per_million:,.4f}" if u.usd_per_million is not None else "-"
                window.add_row(by, key, f"{u.tokens:,.0f}", f"{u.cost:,.4f}", per_m)
        console.print(window)
    t = report.totals()
    console.print(
        f"[bold]total[/] ${t['per_hour']:,.2f}/h (idle ${t['idle_per_hour']:,.2f}/h), "
        f"${t['accumulated']:,.2f} so far; "
        f"naive (a whole on-demand GPU per replica) ${t['naive_per_hour']:,.2f}/h: "
        f"saving ${t['savings_per_hour']:,.2f}/h"
    )


@dataclass
class History:
    """Cost over a past period as Prometheus recorded the operator's /metrics: workloads deleted
    during the period count, which the statuses (only what exists now) can't show."""

    period: str
    workloads: dict[tuple[str, str, str], float]
    """(kind, namespace, name) → USD in the period."""
    pools: dict[str, tuple[float, float]]
    """pool → (USD, idle USD) in the period."""
    timeline: dict[str, list[tuple[float, float]]]
    """namespace (and IDLE) → [(epoch seconds, USD/hour)]."""

    @property
    def namespaces(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for (_, namespace, _), usd in self.workloads.items():
            out[namespace] += usd
        return dict(sorted(out.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "workloads": [
                {"kind": k, "namespace": ns, "name": n, "spent": usd}
                for (k, ns, n), usd in sorted(self.workloads.items())
            ],
            "namespaces": self.namespaces,
            "pools": {
                name: {"spent": usd, "idle": idle}
                for name, (usd, idle) in sorted(self.pools.items())
            },
            "total": sum(usd for usd, _ in self.pools.values()),
        }


IDLE = "idle GPU memory"


def history(source: CostHistory, period: str) -> History:
    seconds = duration_seconds(period)
    total = source.spent("gpucost_pool_cost_per_hour", "pool", seconds)
    idle = source.spent("gpucost_pool_idle_cost_per_hour", "pool", seconds)
    timeline = source.timeline("gpucost_workload_cost_per_hour", "namespace", seconds)
    timeline[IDLE] = source.timeline("gpucost_pool_idle_cost_per_hour", "", seconds).get("", [])
    return History(
        period,
        source.spent("gpucost_workload_cost_per_hour", "kind, namespace, name", seconds),  # type: ignore[arg-type]
        {pool: (usd, idle.get((pool,), 0.0)) for (pool,), usd in total.items()},
        timeline,
    )


def render_history(console: Console, past: History) -> None:
    table = Table(title=f"GPU cost over the last {past.period} (Prometheus)")
    for col in ("namespace", "workload", "$"):
        table.add_column(col, justify="right" if col == "$" else "left")
    for (kind, namespace, name), usd in sorted(past.workloads.items()):
        table.add_row(namespace, f"{kind} {name}", f"{usd:,.4f}")
    for namespace, usd in past.namespaces.items():
        table.add_row(f"[bold]{namespace}[/]", "all", f"[bold]{usd:,.4f}[/]")
    console.print(table)
    spent = sum(usd for usd, _ in past.pools.values())
    idle = sum(i for _, i in past.pools.values())
    console.print(
        f"[bold]last {past.period}[/] ${spent:,.2f} on GPU nodes, of which ${idle:,.2f} idle GPU "
        "memory"
    )


def plot(past: History, path: Path) -> None:
    """Cost per hour by namespace, stacked, with idle GPU memory on top."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "--png needs matplotlib: pip install 'gpu-cost-operator[report]'"
        ) from None
    times = sorted({t for series in past.timeline.values() for t, _ in series})
    names = [n for n in sorted(past.timeline) if n != IDLE] + (
        [IDLE] if past.timeline.get(IDLE) else []
    )
    rows = [[dict(past.timeline[n]).get(t, 0.0) for t in times] for n in names]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if times:
        ax.stackplot(
            [datetime.fromtimestamp(t, timezone.utc) for t in times], rows, labels=names, alpha=0.85
        )
        ax.legend(loc="upper left", fontsize="small")
    ax.set_title(f"GPU cost per hour by namespace, last {past.period}")
    ax.set_ylabel("USD / hour")
    ax.set_xlabel("UTC")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
