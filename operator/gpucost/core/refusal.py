"""Whether a node can take a new pod now, and which placed pods its node will never run.

One definition for the placer, the autoscaler's plans and consolidation: a node that is going
away (reclaimed, drained, cordoned, deleted) must get no new work from any of them, or the work
is pinned to a node that will never run it. And because a placement is a required node affinity,
a pod whose node refuses it waits forever unless someone replaces it: that is decided here too,
from what the API says now, so it needs no event to have been seen and works after a restart.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gpucost import names
from gpucost.api.common import condition

if TYPE_CHECKING:  # snapshot reads nodes through node_refusal
    from gpucost.core.snapshot import PlacedPod

Obj = dict[str, Any]
CATCHING_UP = frozenset(
    {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "karpenter.sh/unregistered"}
)
"""Taints another controller keeps in step with the node joining: the node lifecycle controller's
follow the Ready condition, Karpenter lifts its own once it registers the node. On a Ready node
they are about to go, and kube-scheduler binds as soon as they have (a node that is not Ready is
refused by its condition). Refusing them there made a burst of booting nodes look like no room,
and a Karpenter node Ready a moment before its registration was bought a second time."""
SCHEDULER_GRACE_SECONDS = 10.0
"""How long kube-scheduler must have called a pinned pod Unschedulable before it is replaced: its
informers can trail ours by a moment, and a refusal that lasts is never that."""


def tolerates(tolerations: Iterable[Obj], taint: Obj) -> bool:
    """Kubernetes' own matching: operator Equal by default, Exists with no key matches all."""
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def _taint(t: Obj) -> str:
    return f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"


def node_refusal(node: Obj, tolerations: Iterable[Obj] = ()) -> str | None:
    """Why the node takes no new pod with these tolerations now, naming it; None when it does.

    The taints cover the cloud's interruption marks, ``node.kubernetes.io/unschedulable`` and
    ``karpenter.sh/disrupted`` alike: any the pod does not tolerate keeps kube-scheduler from
    binding it, so placing it there would strand it. ``not-ready``/``unreachable`` go with the
    Ready condition, which is checked first.
    """
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    name = meta.get("name", "?")
    if meta.get("deletionTimestamp"):
        return f"node {name} is being deleted"
    disruption = (meta.get("annotations") or {}).get(names.ANNOTATION_DISRUPTION)
    if disruption:
        return f"node {name} is being drained ({disruption})"
    if spec.get("unschedulable"):
        return f"node {name} is cordoned"
    if condition(node.get("status"), "Ready").get("status") != "True":
        return f"node {name} is not Ready"
    tolerations = list(tolerations)
    refused = [
        _taint(t)
        for t in spec.get("taints") or []
        if t.get("key") not in CATCHING_UP and not tolerates(tolerations, t)
    ]
    if refused:
        return f"node {name} has the taint{'s' if len(refused) > 1 else ''} {', '.join(refused)}"
    return None


def catching_up(node: Obj) -> bool:
    """Ready, but still carrying a taint the node lifecycle controller is about to lift."""
    ready = condition(node.get("status"), "Ready").get("status") == "True"
    taints = (node.get("spec") or {}).get("taints") or []
    return ready and any(t.get("key") in CATCHING_UP for t in taints)


def stranded(
    pods: Sequence[PlacedPod],
    refusals: Mapping[str, str | None],
    now: float,
    catching: Collection[str] = (),
) -> dict[str, str]:
    """Pods to delete so their ordinal (or attempt) is placed again, each with why, naming the node.

    ``refusals``: every node in the API with its ``node_refusal`` (a node missing is gone). A pod
    already bound stays on a node that is only going: it leaves through the drain, whose evictions
    a PodDisruptionBudget may hold; only a node that is gone can no longer run it. ``catching``:
    nodes ``catching_up``, whose refusal by kube-scheduler ends when the taint goes (in a burst of
    hundreds of new nodes that took longer than the grace, and replacing those pods moved them
    off the GPUs their nodes were bought for).
    """
    out: dict[str, str] = {}
    for p in pods:
        if p.terminal:
            continue
        if p.node not in refusals:
            out[p.name] = f"node {p.node} no longer exists"
        elif p.bound or p.deleting:
            continue
        elif why := refusals[p.node]:
            out[p.name] = why
        elif (
            p.unschedulable_since is not None
            and now - p.unschedulable_since >= SCHEDULER_GRACE_SECONDS
            and p.node not in catching
        ):
            out[p.name] = f"kube-scheduler will not bind it to node {p.node}: {p.scheduler_message}"
    return out
