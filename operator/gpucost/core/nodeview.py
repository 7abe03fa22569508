"""What the autoscaler reads off Nodes and Pods (plain API dicts): node states and pending GPU
pods."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from gpucost import names
from gpucost.api.common import CapacityType, condition, epoch
from gpucost.core.inventory import Ask
from gpucost.core.refusal import tolerates
from gpucost.core.scaledown import NodePod, NodeState, Replacing
from gpucost.core.snapshot import reservation as reserved
from gpucost.core.snapshot import scheduler_refusal

Obj = dict[str, Any]
GPU_RESOURCES = (names.RESOURCE_GPU, names.RESOURCE_GPU_MEMORY)


def _requests(pod: Obj, resource: str) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        raw = (res.get("requests") or {}).get(
            resource, (res.get("limits") or {}).get(resource, "0")
        )
        try:
            total += int(raw)
        except ValueError:
            total += 1  # an odd quantity still means the pod asks for some
    return total


def uses_gpu(pod: Obj) -> bool:
    return any(_requests(pod, r) > 0 for r in GPU_RESOURCES)


def _finished(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _keep(pod: Obj) -> str | None:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    for key, value in names.DO_NOT_DISRUPT.items():
        if ann.get(key, "").lower() == value:
            return f'{key}: "{value}"'
    return None


def _daemon(pod: Obj) -> bool:
    meta = pod.get("metadata") or {}
    return "kubernetes.io/config.mirror" in (meta.get("annotations") or {}) or any(
        o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []
    )


def node_pod(pod: Obj) -> NodePod:
    meta = pod["metadata"]
    return NodePod(
        meta["namespace"],
        meta["name"],
        uses_gpu(pod),
        _daemon(pod),
        _keep(pod),
        bool(meta.get("deletionTimestamp")),
    )


def pods_by_node(pods: Iterable[Obj]) -> dict[str, list[Obj]]:
    """Live pods bound to each node, and the operator's pods pinned to it and not bound yet: they
    were given its GPUs, so they keep an idle node alive and a drain must move them too (finished
    pods hold nothing)."""
    out: dict[str, list[Obj]] = defaultdict(list)
    for p in pods:
        pinned = ((p.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_NODE)
        node = (p.get("spec") or {}).get("nodeName") or pinned
        if node and not _finished(p):
            out[node].append(p)
    return out


def interrupted(node: Obj) -> bool:
    taints = (node.get("spec") or {}).get("taints") or []
    return any(t.get("key") in names.INTERRUPTION_TAINTS for t in taints)


def node_state(node: Obj, pods: list[Obj]) -> NodeState:
    meta = node["metadata"]
    ann = meta.get("annotations") or {}
    owners, until, _ = reserved(node)
    return NodeState(
        name=meta["name"],
        pool=(meta.get("labels") or {}).get(names.LABEL_NODEPOOL, ""),
        ready=condition(node.get("status"), "Ready").get("status") == "True",
        pods=tuple(node_pod(p) for p in pods),
        idle_since=epoch(ann.get(names.ANNOTATION_IDLE_SINCE)),
        disruption=ann.get(names.ANNOTATION_DISRUPTION),
        interrupted=interrupted(node),
        consolidatable_since=epoch(ann.get(names.ANNOTATION_CONSOLIDATABLE_SINCE)),
        replacing=_replacing(ann.get(names.ANNOTATION_REPLACING)),
        reserved_for=owners,
        reserved_until=until,
    )


def _replacing(raw: str | None) -> Replacing | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Replacing(float(data["since"]), str(data.get("message", "")))
    except (ValueError, KeyError, TypeError):
        return Replacing(0.0, "")  # a broken mark still means a replacement was launched


def unschedulable_gpu_pod(pod: Obj) -> bool:
    """A pod nobody placed that asks for whole GPUs and that kube-scheduler could not bind."""
    meta = pod.get("metadata") or {}
    if (meta.get("labels") or {}).get(names.LABEL_MANAGED_BY) == names.MANAGED_BY:
        return False  # ours: its InferencePool's status carries it
    if (pod.get("spec") or {}).get("nodeName") or (pod.get("status") or {}).get(
        "phase"
    ) != "Pending":
        return False
    return scheduler_refusal(pod) is not None and _requests(pod, names.RESOURCE_GPU) > 0


def pod_ask(
    pod: Obj, pool_labels: dict[str, dict[str, str]], pool_taints: dict[str, list[dict[str, str]]]
) -> Ask:
    """The pod's GPU ask and the pools whose nodes it could land on (labels, taints, capacity type).

    Work is not interruptible unless it says so (``gpucost.dev/interruptible: "true"``, or a
    nodeSelector naming a capacity type): it never lands on spot by default.
    """
    spec = pod.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    if names.LABEL_CAPACITY_TYPE in selector:
        types = frozenset({selector[names.LABEL_CAPACITY_TYPE]})
    elif ann.get(names.ANNOTATION_INTERRUPTIBLE, "").lower() == "true":
        types = frozenset(c.value for c in CapacityType)
    else:
        types = frozenset({CapacityType.ON_DEMAND.value})
    pools = frozenset(
        name
        for name, labels in pool_labels.items()
        if all(labels.get(k) == v for k, v in selector.items())
        and all(tolerates(spec.get("tolerations") or [], t) for t in pool_taints.get(name, []))
    )
    return Ask(gpus=_requests(pod, names.RESOURCE_GPU), capacity_types=types, pools=pools)
