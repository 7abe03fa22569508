"""``gpucost demo``: a real control plane with fake GPU nodes, the operator, and the examples.

Everything runs locally: kube-apiserver & co. from scripts/setup.sh, GPU nodes from KWOK, the
operator as a child process. It prints what got placed where, then what happens when a pool asks
for more GPU memory than exists.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from gpucost import names, report
from gpucost.api.common import condition
from gpucost.core import snapshot
from gpucost.devcluster import binaries, demo_serving
from gpucost.devcluster.controlplane import ControlPlane, poll
from gpucost.devcluster.nodes import create_pool_nodes
from gpucost.devcluster.operatorproc import OperatorProcess
from gpucost.devcluster.storage import local_claim

console = Console()
NAME = "gpucost-demo"


def _workdir() -> Path:
    return binaries.cache_root() / "demo"


def _get(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    return condition(obj.get("status"), "Ready")


def _placed(cp: ControlPlane) -> list[snapshot.PlacedPod]:
    """The operator's pods, read back from their annotations as the operator itself reads them."""
    selector = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
    return [
        p
        for p in (snapshot.placed_pod(o) for o in _get(cp, "pods", "-A", "-l", selector)["items"])
        if p
    ]


_LEVELS = " ▁▂▃▄▅▆▇█"


def _gpu_table(cp: ControlPlane) -> tuple[Table, int]:
    """One row per node; one bar character per GPU, filled to its allocated share of memory."""
    pods = _placed(cp)
    pods_on = Counter(p.node for p in pods)
    held: dict[tuple[str, int], int] = defaultdict(int)
    for a in snapshot.allocations(pods):
        held[(a.node, a.gpu_index)] += a.memory_mib
    table = Table(title="GPU memory per node (placed by the operator, bound by the real scheduler)")
    for col in ("node", "capacity", "GPUs", "per-GPU fill", "MiB used / total", "pods"):
        table.add_column(col)
    used_gpus = 0
    for node in sorted(_get(cp, "nodes")["items"], key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        gpus = snapshot.node_gpus(node, None)
        fills = [held.get((name, g.index), 0) / g.memory_mib for g in gpus]
        used_gpus += sum(f > 0 for f in fills)
        bar = "".join(_LEVELS[min(8, round(8 * f)) if f < 1 else 8] if f else "·" for f in fills)
        table.add_row(
            name,
            node["metadata"]["labels"].get(names.LABEL_CAPACITY_TYPE, ""),
            f"{len(gpus)}x {gpus[0].model if gpus else '-'}",
            f"[green]{bar}[/]",
            f"{sum(held.get((name, g.index), 0) for g in gpus)} / "
            f"{sum(g.memory_mib for g in gpus)}",
            str(pods_on[name]),
        )
    return table, used_gpus


def _pool_table(cp: ControlPlane) -> Table:
    table = Table(title="InferencePools")
    for col in ("pool", "want", "placed", "ready", "ask per replica", "Ready", "reason"):
        table.add_column(col)
    for pool in _get(cp, "inferencepools.gpucost.dev", "-A")["items"]:
        spec, status = pool["spec"], pool.get("status") or {}
        ask = (
            f"{spec['gpu']['memoryMiB']} MiB"
            if "memoryMiB" in spec["gpu"]
            else f"{spec['gpu']['gpus']} GPUs"
        )
        ready = _ready(pool)
        capped = condition(status, "BudgetCapped").get("status") == "True"
        table.add_row(
            pool["metadata"]["name"],
            f"{spec['replicas']} → {min(spec['replicas'], spec.get('minReplicas', 0))}"
            if capped
            else str(spec["replicas"]),
            str(status.get("replicas", 0)),
            str(status.get("readyReplicas", 0)),
            ask,
            ready.get("status", "?"),
            "BudgetCapped" if capped else ready.get("reason", ""),
        )
        if ready.get("status") == "False":
            table.caption = f"{pool['metadata']['name']}: {ready.get('message', '')}"
    return table


def _node_pool_table(cp: ControlPlane) -> Table:
    table = Table(title="GPUNodePools")
    for col in ("pool", "instance", "capacity", "ready nodes", "GPU MiB alloc / total", "$/hour"):
        table.add_column(col)
    for pool in _get(cp, "gpunodepools")["items"]:
        s = pool.get("status") or {}
        table.add_row(
            pool["metadata"]["name"],
            pool["spec"]["instanceType"],
            pool["spec"]["capacityType"],
            f"{s.get('readyNodes', 0)}/{s.get('nodes', 0)}",
            f"{s.get('gpuMemoryAllocatedMiB', 0)} / {s.get('gpuMemoryTotalMiB', 0)}",
            f"{s.get('costPerHour', 0):.2f}",
        )
    return table


def _wait_settled(cp: ControlPlane, pools: list[dict[str, Any]], timeout: float = 90) -> None:
    def settled() -> bool:
        for p in pools:
            obj = _get(
                cp,
                "inferencepools.gpucost.dev",
                p["metadata"]["name"],
                "-n",
                p["metadata"]["namespace"],
            )
            status = obj.get("status") or {}
            if status.get("observedGeneration") != obj["metadata"]["generation"] or not _ready(obj):
                return False
            if _ready(obj)["reason"] in {"ReplicasNotReady", ""}:
                return False
        return True

    poll("the InferencePools to settle", settled, timeout, interval=0.5)


def _pools_account(cp: ControlPlane) -> bool:
    held = sum(a.memory_mib for a in snapshot.allocations(_placed(cp)))
    return held == sum(
        (p.get("status") or {}).get("gpuMemoryAllocatedMiB", -1)
        for p in _get(cp, "gpunodepools")["items"]
    )


def _events(cp: ControlPlane, obj: str, reason: str) -> str:
    return cp.kubectl(
        "get",
        "events",
        "-A",
        "--field-selector",
        f"involvedObject.name={obj},reason={reason}",
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
        "--no-headers",
    ).stdout.strip()


def down() -> int:
    ControlPlane(NAME, _workdir()).stop()
    console.print("demo cluster stopped")
    return 0


def _budget_act(cp: ControlPlane) -> None:
    """The bill so far, then a budget the team has overspent: its pools drop to minReplicas."""
    console.rule("What it costs (gpucost report), and a budget that holds spend back")
    report.render(
        console,
        report.build(
            _get(cp, "inferencepools.gpucost.dev", "-A")["items"],
            _get(cp, "gpunodepools")["items"],
            _get(cp, "compressionjobs", "-A")["items"],
        ),
    )
    console.print(
        'kubectl patch costbudget team-budget --type=merge -p \'{"spec":{"daily":0.05}}\''
    )
    cp.kubectl(
        "patch",
        "costbudget",
        "team-budget",
        "-n",
        "default",
        "--type=merge",
        "-p",
        '{"spec":{"daily":0.05}}',
    )
    with console.status("Waiting for the budget to pass 100 % and the pools to be capped …"):
        over = poll(
            "team-budget Exceeded",
            lambda: (
                (b := _get(cp, "costbudget", "team-budget", "-n", "default"))
                and condition(b.get("status"), "Exceeded").get("status") == "True"
                and b
            ),
            60,
            interval=0.5,
        )
        poll(
            "llama-8b capped at minReplicas",
            lambda: (
                (
                    _get(cp, "inferencepools.gpucost.dev", "llama-8b", "-n", "default").get(
                        "status"
                    )
                    or {}
                ).get("replicas")
                == 2
            ),
            60,
            interval=0.5,
        )
    console.print(
        f"CostBudget team-budget Exceeded: {condition(over['status'], 'Exceeded')['message']}",
        overflow="fold",
    )
    console.print(_events(cp, "team-budget", "BudgetExceeded"), overflow="fold")
    console.print(_pool_table(cp))


def run(root: Path, keep: bool = False) -> int:
    examples = sorted((root / "examples").glob("*.yaml"))
    # The demo runs no Cluster API: the clusterAPI pool example and its MachineDeployment stay out.
    docs = [
        d
        for p in examples
        for d in yaml.safe_load_all(p.read_text())
        if d["apiVersion"].startswith("gpucost.dev/")
        and (d.get("spec") or {}).get("provider", {}).get("kind") != "clusterAPI"
    ]
    cp = ControlPlane(NAME, _workdir())
    operator = OperatorProcess(
        cp.kubeconfig,
        _workdir() / "operator.log",
        resync_seconds=2.0,
        env={"GPUCOST_BUDGET_INTERVAL": "2", "GPUCOST_COST_WRITE_SECONDS": "2"},
    )
    started = time.monotonic()
    finished = False
    try:
        with console.status(
            "Starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK on "
            "127.0.0.1 …"
        ):
            cp.start()
        console.print(
            f"[bold]control plane[/] up in {time.monotonic() - started:.1f}s  "
            f"(KUBECONFIG={cp.kubeconfig})"
        )
        with console.status("Installing the CRDs …"):
            cp.kubectl("apply", "-f", str(root / "crds"))
            cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for doc in (d for d in docs if d["kind"] == "GPUNodePool"):
            made = create_pool_nodes(cp, doc)
            console.print(
                f"GPUNodePool [cyan]{doc['metadata']['name']}[/]: {len(made)} fake GPU nodes "
                f"({', '.join(made)})"
            )
        with console.status("Starting the operator (gpucost operator) …"):
            operator.start()
        cp.adopt(operator.proc.pid)  # so `demo --down` or the next run stops it, not only this one
        console.print(f"operator running, log: {operator.log}")
        for claim in ("models", "scratch"):  # the example CompressionJobs' storage
            local_claim(cp, claim)
        workloads = [d for d in docs if d["kind"] != "GPUNodePool"]
        for doc in workloads:
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
            console.print(f"applied {doc['kind']} [cyan]{doc['metadata']['name']}[/]")
        pools = [d for d in workloads if d["kind"] == "InferencePool"]
        with console.status("Waiting for every replica to be placed and Running …"):
            _wait_settled(cp, pools)
            # GPUNodePool status is refreshed on its resync timer, so it trails placements briefly.
            poll(
                "GPUNodePool status to count the placements",
                lambda: _pools_account(cp),
                30,
                interval=0.5,
            )
        table, used = _gpu_table(cp)
        console.print(table)
        console.print(_pool_table(cp))
        console.print(_node_pool_table(cp))
        naive = sum(p["spec"]["replicas"] * p["spec"]["gpu"].get("gpus", 1) for p in pools)
        count = sum(p["spec"]["replicas"] for p in pools)
        console.print(
            f"[bold green]{count} replicas run on {used} GPUs[/]; a GPU (or two) per replica "
            f"would take {naive}."
        )

        console.rule("Asking for more than exists")
        # embeddings may only use the two 1-GPU spot A10G nodes: room for 6 slices of 6000 MiB.
        console.print(
            'kubectl patch inferencepool embeddings --type=merge -p \'{"spec":{"replicas":8}}\''
        )
        cp.kubectl(
            "patch",
            "inferencepools.gpucost.dev",
            "embeddings",
            "-n",
            "default",
            "--type=merge",
            "-p",
            '{"spec":{"replicas":8}}',
        )
        with console.status("Waiting for the operator's verdict …"):
            _wait_settled(cp, pools)
        console.print(_pool_table(cp))
        poll(
            "the Unschedulable warning event",
            lambda: (
                "Unschedulable"
                in cp.kubectl(
                    "get", "events", "-n", "default", "--field-selector", "type=Warning"
                ).stdout
            ),
            30,
        )
        events = cp.kubectl(
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            "involvedObject.name=embeddings",
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
        )
        for line in events.stdout.strip().splitlines()[-4:]:
            console.print(line, overflow="fold")

        console.rule("The autoscaler buys the cheapest nodes that fit")
        with console.status(
            "Waiting for new spot A10G nodes to boot (bootDelay 30s) and the replicas to run …"
        ):
            poll("the ScaleUp event", lambda: _events(cp, "a10g-spot", "ScaleUp"), 30, interval=0.5)
            poll(
                "embeddings Ready",
                lambda: (
                    _ready(
                        _get(cp, "inferencepools.gpucost.dev", "embeddings", "-n", "default")
                    ).get("status")
                    == "True"
                ),
                120,
                interval=0.5,
            )
            poll(
                "GPUNodePool status to count the placements",
                lambda: _pools_account(cp),
                30,
                interval=0.5,
            )
        console.print(_events(cp, "a10g-spot", "ScaleUp"), overflow="fold")
        console.print(_pool_table(cp))
        console.print(_node_pool_table(cp))
        demo_serving.run(cp, console)
        _budget_act(cp)
        console.print(f"\n[bold]demo finished[/] in {time.monotonic() - started:.1f}s")
        if keep:
            console.print(
                f"cluster and operator left running:\n  export KUBECONFIG={cp.kubeconfig}\n"
                f"  export PATH={binaries.bin_dir()}:$PATH\n  kubectl get "
                "gpunodepools,inferencepools -A\n"
                "stop it with: .venv/bin/gpucost demo --down"
            )
            pids = cp.pids()
            if pids:  # scripts/demo.sh runs it in a private network namespace
                console.print(
                    "it listens inside the demo's network namespace; enter it first with:\n"
                    f"  nsenter --target {pids[0]} --user --net --preserve-credentials bash"
                )
        finished = True
        return 0
    finally:
        if not (keep and finished):  # a failed or interrupted (Ctrl-C) --keep run leaves nothing
            with console.status("Stopping the operator and the control plane …"):
                operator.stop()
                cp.stop()
