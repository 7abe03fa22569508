"""Turn API objects (plain dicts) into inventory values.

Allocation is derived from the pods in the API every time, never from memory, so a restarted
operator (or a second one after failover) sees exactly what the first one placed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gpucost import names
from gpucost.api.common import condition, epoch
from gpucost.api.nodepool import GPUNodePoolSpec, SharingMode
from gpucost.core.inventory import GPU, Allocation, GPUNode
from gpucost.core.refusal import node_refusal

TERMINAL_PHASES = {"Succeeded", "Failed"}


def _ready(obj: dict[str, Any]) -> bool:
    return condition(obj.get("status"), "Ready").get("status") == "True"


def node_gpus(node: dict[str, Any], pool: GPUNodePoolSpec | None) -> tuple[GPU, ...]:
    """The agent's discovery annotation if present, else GPU feature discovery labels, else the
    pool."""
    meta = node.get("metadata", {})
    raw = (meta.get("annotations") or {}).get(names.ANNOTATION_GPUS)
    if raw:
        try:
            return tuple(
                GPU(
                    int(g["index"]),
                    str(g["model"]),
                    int(g["memoryMiB"]),
                    g.get("uuid"),
                    bool(g.get("healthy", True)),
                )
                for g in json.loads(raw)
            )
        except (ValueError, KeyError, TypeError):
            pass  # a broken annotation must not hide the node's labels
    labels = meta.get("labels") or {}
    try:
        count = int(labels[names.LABEL_GPU_COUNT])
        memory = int(labels[names.LABEL_GPU_MEMORY])
        model = labels.get(names.LABEL_GPU_PRODUCT, "unknown")
    except (KeyError, ValueError):
        if pool is None:
            return ()
        count, memory, model = pool.gpu.count, pool.gpu.memory_mib, pool.gpu.model
    return tuple(GPU(i, model, memory) for i in range(count))


def gpu_node(node: dict[str, Any], pools: dict[str, GPUNodePoolSpec]) -> GPUNode | None:
    """A node the operator may place on, or None if it is not in a known GPUNodePool."""
    meta = node.get("metadata", {})
    labels = meta.get("labels") or {}
    pool_name = labels.get(names.LABEL_NODEPOOL)
    pool = pools.get(pool_name or "")
    if pool is None:
        return None
    gpus = node_gpus(node, pool)
    if not gpus:
        return None
    reserved_for, reserved_until, slots = reservation(node)
    return GPUNode(
        name=meta["name"],
        pool=pool_name or "",
        capacity_type=labels.get(names.LABEL_CAPACITY_TYPE, pool.capacity_type),
        price_per_hour=pool.price_per_hour,
        gpus=gpus,
        shared=pool.sharing == SharingMode.MEMORY_SLICE.value,
        schedulable=node_refusal(node, pod_tolerations(pool)) is None,
        reserved_for=reserved_for,
        reserved_until=reserved_until,
        slots=slots,
    )


def pod_tolerations(pool: GPUNodePoolSpec | None) -> list[dict[str, str]]:
    """What the operator's pods on a pool's nodes tolerate: the pool's own taints."""
    return [t.toleration() for t in pool.taints] if pool else []


Slots = tuple[tuple[str, tuple[int, ...]], ...]


def reservation(node: dict[str, Any]) -> tuple[frozenset[str], float, Slots]:
    """Who a launched node is held for, until when, on which GPUs. The hold runs ``hold`` seconds
    past the node turning Ready (its boot took what it took: a burst's last nodes join late),
    and at least until ``until``."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_RESERVED_FOR)
    if not raw:
        return frozenset(), 0.0, ()
    try:
        data = json.loads(raw)
        slots = tuple((str(o), tuple(int(i) for i in gpus)) for o, gpus in data.get("slots") or [])
        until = float(data["until"])
        ready = condition(node.get("status"), "Ready")
        since = epoch(ready.get("lastTransitionTime")) if ready.get("status") == "True" else None
        if since is not None:
            until = max(until, since + float(data.get("hold") or 0.0))
        return frozenset(str(o) for o in data["owners"]), until, slots
    except (ValueError, KeyError, TypeError):
        return frozenset(), 0.0, ()  # a broken mark reserves nothing


def pool_template_node(name: str, pool: GPUNodePoolSpec) -> GPUNode:
    """An empty hypothetical node of a pool: what the pool could ever offer one ask."""
    gpus = tuple(GPU(i, pool.gpu.model, pool.gpu.memory_mib) for i in range(pool.gpu.count))
    return GPUNode(
        name=f"<new {name} node>",
        pool=name,
        capacity_type=pool.capacity_type,
        price_per_hour=pool.price_per_hour,
        gpus=gpus,
        shared=pool.sharing == SharingMode.MEMORY_SLICE.value,
    )


@dataclass(frozen=True)
class PlacedPod:
    """A pod the operator placed, as read back from its annotations."""

    name: str
    owner_uid: str
    replica: int
    node: str
    gpu_indices: tuple[int, ...]
    gpu_uuids: tuple[str, ...]
    mib_per_gpu: int
    phase: str
    ready: bool
    deleting: bool
    bound: bool = False
    """kube-scheduler bound it (``spec.nodeName``): it may be running."""
    unschedulable_since: float | None = None
    """When kube-scheduler last started calling it Unschedulable (epoch seconds); None if not."""
    scheduler_message: str = ""
    revision: str = ""
    """The InferencePool revision it was built from (empty: a job's pod, or an older operator's)."""
    ip: str = ""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def memory_mib(self) -> int:
        return self.mib_per_gpu * len(self.gpu_indices)


def scheduler_refusal(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's PodScheduled condition while kube-scheduler calls it Unschedulable, else None."""
    scheduled = condition(pod.get("status"), "PodScheduled")
    unschedulable = (
        scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
    )
    return scheduled if unschedulable else None


def placed_pod(pod: dict[str, Any]) -> PlacedPod | None:
    meta = pod.get("metadata", {})
    ann = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    try:
        indices = tuple(int(i) for i in ann[names.ANNOTATION_GPU_INDICES].split(",") if i)
        uuids = tuple(u for u in ann.get(names.ANNOTATION_GPU_UUIDS, "").split(",") if u)
        status = pod.get("status") or {}
        refused = scheduler_refusal(pod)
        return PlacedPod(
            name=meta["name"],
            owner_uid=labels.get(names.LABEL_OWNER_UID, ""),
            replica=int(labels.get(names.LABEL_REPLICA, "-1")),
            node=ann[names.ANNOTATION_NODE],
            gpu_indices=indices,
            gpu_uuids=uuids,
            mib_per_gpu=int(ann[names.ANNOTATION_GPU_MEMORY]),
            phase=status.get("phase", "Pending"),
            ready=_ready(pod),
            deleting=meta.get("deletionTimestamp") is not None,
            bound=bool((pod.get("spec") or {}).get("nodeName")),
            unschedulable_since=epoch(refused.get("lastTransitionTime")) if refused else None,
            scheduler_message=refused.get("message", "") if refused else "",
            revision=labels.get(names.LABEL_REVISION, ""),
            ip=status.get("podIP", ""),
        )
    except (KeyError, ValueError):
        return None


def allocations(pods: list[PlacedPod]) -> list[Allocation]:
    """GPU memory held: every pod that is not finished, including ones still terminating."""
    return [
        Allocation(p.node, i, p.mib_per_gpu) for p in pods if not p.terminal for i in p.gpu_indices
    ]
