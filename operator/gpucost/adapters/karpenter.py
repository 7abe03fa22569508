"""The ``karpenter`` node provider: one Karpenter ``NodeClaim`` (karpenter.sh/v1) per node.

This is how Azure's KAITO gets GPU nodes on clusters that already run Karpenter: gpucost picks
the instance and capacity type, and Karpenter's cloud provider (AWS, Azure, KWOK in the tests)
launches exactly that and joins the node. The claim belongs to the Karpenter NodePool the
GPUNodePool names, and takes its nodeClassRef, requirements, labels and taints; it carries
``karpenter.sh/do-not-disrupt`` and never expires, so Karpenter's own consolidation, drift and
expiry leave gpucost's nodes alone. Scale-down deletes the claim; Karpenter drains and removes the
instance.

A launch fails asynchronously: Karpenter deletes a claim it cannot launch (insufficient capacity,
a NodeClass that is not ready) or one whose node never registered. Each claim carries gpucost's
finalizer, so such a deletion waits until the autoscaler has seen it, put the pool in its cool-down
and sent the work elsewhere; only then is the claim let go. A restart in between sees the same
claim again, so no failure is lost.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from gpucost import names
from gpucost.adapters.kube import Kube, unless_gone
from gpucost.api.common import condition
from gpucost.api.nodepool import GPUNodePoolSpec, KarpenterRef

GROUP = "karpenter.sh"
VERSION = "v1"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
FINALIZER = f"{names.DOMAIN}/launch-watch"
LET_GO_ATTEMPTS = 5
OURS = (names.LABEL_NODEPOOL, names.LABEL_CAPACITY_TYPE, names.LABEL_INSTANCE_TYPE)
"""Requirement keys gpucost decides for each claim; the NodePool's own ones for these are
replaced."""

Obj = dict[str, Any]


class KarpenterError(RuntimeError):
    """The NodePool named is missing or unusable: nothing can be launched through it."""


@dataclass(frozen=True)
class FailedLaunch:
    claim: str
    message: str


def _taints(*lists: list[Obj]) -> list[Obj]:
    """Merged by (key, effect), the later list winning: the GPUNodePool's taints over the
    NodePool template's."""
    out: dict[tuple[str, str], Obj] = {}
    for taints in lists:
        for t in taints:
            out[(t["key"], t["effect"])] = t
    return list(out.values())


def node_claim(pool: str, spec: GPUNodePoolSpec, node_pool: Obj, extra: dict[str, str]) -> Obj:
    """What gpucost asks Karpenter for: exactly this instance and capacity type (one value each,
    so Karpenter has no choice to make), the NodePool's other requirements kept."""
    ref = node_pool["metadata"]["name"]
    template = node_pool["spec"].get("template") or {}
    tspec = template.get("spec") or {}
    tmeta = template.get("metadata") or {}
    requirements = [r for r in tspec.get("requirements") or [] if r["key"] not in OURS]
    requirements += [
        {"key": names.LABEL_INSTANCE_TYPE, "operator": "In", "values": [spec.instance_type]},
        {"key": names.LABEL_CAPACITY_TYPE, "operator": "In", "values": [spec.capacity_type]},
    ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeClaim",
        "metadata": {
            "name": f"{pool}-{secrets.token_hex(3)}",
            "labels": {
                **(tmeta.get("labels") or {}),
                **spec.node_labels(pool),
                NODEPOOL_LABEL: ref,
            },
            "annotations": {**(tmeta.get("annotations") or {}), DO_NOT_DISRUPT: "true", **extra},
            "finalizers": [FINALIZER],
        },
        "spec": {
            "nodeClassRef": tspec["nodeClassRef"],
            "requirements": requirements,
            "resources": {
                "requests": {
                    "cpu": spec.cpu,
                    "memory": spec.memory,
                    names.RESOURCE_GPU: str(spec.gpu.count),
                }
            },
            "taints": _taints(tspec.get("taints") or [], [t.wire() for t in spec.taints]),
            "startupTaints": tspec.get("startupTaints") or [],
            "expireAfter": "Never",
        },
    }


def failure(claim: Obj) -> str | None:
    """Why Karpenter gave up on this claim, or None while it may still become a node."""
    meta, status = claim["metadata"], claim.get("status") or {}
    launched = condition(status, "Launched")
    if meta.get("deletionTimestamp") and not status.get("nodeName"):
        return f"NodeClaim {meta['name']} deleted by Karpenter before its node joined"
    if launched.get("status") == "False" or launched.get("reason") == "LaunchFailed":
        return f"NodeClaim {meta['name']} not launched: {launched.get('message') or 'no reason'}"
    return None


class KarpenterProvider:
    name = "karpenter"

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    @staticmethod
    def _ref(spec: GPUNodePoolSpec) -> KarpenterRef:
        ref = spec.provider.karpenter
        assert ref is not None  # the CRD's rule and the model's validator require it
        return ref

    def _claims(self, pool: str) -> list[Obj]:
        return self.kube.custom.list_cluster_custom_object(
            GROUP, VERSION, "nodeclaims", label_selector=f"{names.LABEL_NODEPOOL}={pool}"
        )["items"]

    def _delete(self, name: str) -> None:
        unless_gone(
            lambda: self.kube.custom.delete_cluster_custom_object(
                GROUP, VERSION, "nodeclaims", name
            )
        )

    def _let_go(self, claim: Obj) -> None:
        """Remove gpucost's finalizer and only it. Writing the rest of the list back from this
        read would race Karpenter, which drops its own finalizer from a claim being deleted: the
        API then refuses the stale list (no finalizer may be added to an object being deleted).
        A JSON patch that tests the entry it removes fails instead, and is made again from a
        fresh read."""
        name = claim["metadata"]["name"]
        for _ in range(LET_GO_ATTEMPTS):
            finalizers = claim["metadata"].get("finalizers") or []
            if FINALIZER not in finalizers:
                return
            at = f"/metadata/finalizers/{finalizers.index(FINALIZER)}"
            ops = [{"op": "test", "path": at, "value": FINALIZER}, {"op": "remove", "path": at}]
            try:
                unless_gone(
                    lambda: self.kube.custom.patch_cluster_custom_object(
                        GROUP, VERSION, "nodeclaims", name, ops,
                        _content_type="application/json-patch+json",
                    )
                )  # fmt: skip
                return
            except ApiException as e:
                if e.status not in (409, 422):
                    raise
            claim = unless_gone(
                lambda: self.kube.custom.get_cluster_custom_object(
                    GROUP, VERSION, "nodeclaims", name
                )
            )
            if claim is None:
                return
        raise KarpenterError(f"NodeClaim {name}: its finalizers kept changing under us")

    def launch(
        self, pool: str, spec: GPUNodePoolSpec, annotations: list[dict[str, str]]
    ) -> list[str]:
        """Karpenter copies a claim's labels and annotations onto its Node, so the reservation
        reaches the node as it does with the other providers."""
        ref = self._ref(spec)
        node_pool = unless_gone(
            lambda: self.kube.custom.get_cluster_custom_object(
                GROUP, VERSION, "nodepools", ref.node_pool
            )
        )
        if node_pool is None:
            raise KarpenterError(f"Karpenter NodePool {ref.node_pool} not found")
        if not ((node_pool["spec"].get("template") or {}).get("spec") or {}).get("nodeClassRef"):
            raise KarpenterError(f"Karpenter NodePool {ref.node_pool} has no nodeClassRef")
        made = []
        for extra in annotations:
            claim = node_claim(pool, spec, node_pool, extra)
            self.kube.custom.create_cluster_custom_object(GROUP, VERSION, "nodeclaims", claim)
            made.append(f"NodeClaim {claim['metadata']['name']}")
        return made

    def terminate(self, node: str, pool: str, spec: GPUNodePoolSpec) -> bool:
        """Deleting the claim is the whole removal: Karpenter drains and deletes the Node and
        the instance behind it."""
        for claim in self._claims(pool):
            if (claim.get("status") or {}).get("nodeName") != node:
                continue
            if claim["metadata"].get("deletionTimestamp"):
                return False
            self._delete(claim["metadata"]["name"])
            return True
        return False

    def unregistered(
        self, pool: str, spec: GPUNodePoolSpec, node_labels: dict[str, dict[str, str]]
    ) -> int:
        """Claims that are neither failed nor deleted and whose node is not in the pool yet. A
        claim being deleted after its node joined is let go of here."""
        count = 0
        for claim in self._claims(pool):
            node = (claim.get("status") or {}).get("nodeName")
            if claim["metadata"].get("deletionTimestamp"):
                if node and FINALIZER in claim["metadata"].get("finalizers", []):
                    self._let_go(claim)
                continue
            if failure(claim) is None and node not in node_labels:
                count += 1
        return count

    def failed_launches(self, pool: str, spec: GPUNodePoolSpec) -> list[FailedLaunch]:
        """With Karpenter's own Warning Event where the claim's status has no reason (it deletes
        a claim on insufficient capacity without setting one)."""
        out = []
        for claim in self._claims(pool):
            why = failure(claim)
            if why is None:
                continue
            if why.endswith("joined"):
                event = self.kube.last_warning("NodeClaim", claim["metadata"]["name"])
                why += f": {event}" if event else ""
            out.append(FailedLaunch(claim["metadata"]["name"], why))
        return out

    def forget(self, pool: str, failed: list[FailedLaunch]) -> None:
        """Called once the pool's cool-down is written: a failed claim is deleted (a launch
        Karpenter keeps retrying is not waited for) and let go of."""
        gone = {f.claim for f in failed}
        for claim in self._claims(pool):
            name = claim["metadata"]["name"]
            if name not in gone:
                continue
            if not claim["metadata"].get("deletionTimestamp"):
                self._delete(name)
            self._let_go(claim)
