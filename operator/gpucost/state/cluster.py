"""Read the cluster into core values: pools, GPU nodes and placed pods, fresh from the API."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gpucost import names
from gpucost.adapters.kube import Kube
from gpucost.api import GROUP, VERSION
from gpucost.api.common import CapacityType, GPUAsk
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.core import snapshot
from gpucost.core.inventory import Ask, GPUNode
from gpucost.core.refusal import catching_up, node_refusal

log = logging.getLogger(__name__)

# Placement reads free memory and then creates pods; two workloads doing that at once could pick
# the same GPU. One lock per operator process (kopf runs one active operator) closes that window.
PLACEMENT_LOCK = threading.RLock()
"""Re-entrant: a batch of reconciles holds it around the cluster view they share."""


@dataclass(frozen=True)
class Pool:
    name: str
    spec: GPUNodePoolSpec
    labels: dict[str, str]
    uid: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    expected_price: float | None = None
    """spec.pricePerHour with spot interruptions counted (its status): what pools rank by."""

    @property
    def ref(self) -> dict[str, Any]:
        """Enough of the object for kopf to post an Event on it."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GPUNodePool",
            "metadata": {"name": self.name, "uid": self.uid},
        }


@dataclass(frozen=True)
class Cluster:
    pools: dict[str, Pool]
    nodes: list[GPUNode]
    pods: list[snapshot.PlacedPod]
    pool_node_counts: dict[str, int]
    """Every node labelled for a pool, GPU inventory readable or not."""
    raw_nodes: list[dict[str, Any]]
    refusals: dict[str, str | None]
    """Every node in the API: why it takes none of the operator's pods now, else None."""
    catching_up: frozenset[str] = frozenset()
    """Ready nodes whose not-ready/unreachable taint is still being lifted."""


def read_pools(kube: Kube) -> dict[str, Pool]:
    pools = {}
    for obj in kube.node_pools():
        name = obj["metadata"]["name"]
        try:
            spec = GPUNodePoolSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            # The pool's own handler reports this on the pool; placement just ignores it.
            log.warning(
                "ignoring GPUNodePool %s with an invalid spec: %s", name, e.errors()[0]["msg"]
            )
            continue
        status = obj.get("status") or {}
        priced = spec.priced(status.get("pricePerHour"))
        if priced is None:
            # Its Priced condition says why; this runs on every look, hence debug, not info.
            log.debug("GPUNodePool %s has no price yet: left out until it has", name)
            continue
        spec = priced
        expected = status.get("expectedPricePerHour")
        if status.get("pricePerHour") != spec.price_per_hour:
            expected = None  # the status is from an older price: rank by the price alone
        meta = obj["metadata"]
        pools[name] = Pool(
            name,
            spec,
            meta.get("labels") or {},
            meta.get("uid", ""),
            meta.get("annotations") or {},
            float(expected) if expected is not None else None,
        )
    return pools


def read_cluster(kube: Kube) -> Cluster:
    pools = read_pools(kube)
    specs = {name: p.spec for name, p in pools.items()}
    raw_nodes = kube.nodes()
    nodes = [n for n in (snapshot.gpu_node(obj, specs) for obj in raw_nodes) if n]
    pods = [p for p in (snapshot.placed_pod(obj) for obj in kube.placed_pods()) if p]
    labels = [
        (obj, (obj["metadata"].get("labels") or {}).get(names.LABEL_NODEPOOL)) for obj in raw_nodes
    ]
    counts = Counter(pool for _, pool in labels if pool)
    refusals = {
        obj["metadata"]["name"]: node_refusal(obj, snapshot.pod_tolerations(specs.get(pool or "")))
        for obj, pool in labels
    }
    catching = frozenset(obj["metadata"]["name"] for obj in raw_nodes if catching_up(obj))
    return Cluster(pools, nodes, pods, dict(counts), raw_nodes, refusals, catching)


def make_ask(
    gpu: GPUAsk,
    capacity_types: Iterable[str],
    gpu_models: Iterable[str],
    pool_selector: dict[str, str],
    cluster: Cluster,
    node_selector: dict[str, str] | None = None,
) -> Ask:
    """A workload's GPU ask over the pools its selector picks (and whose nodes carry the labels
    its pods' nodeSelector needs)."""
    selected = frozenset(
        name
        for name, pool in cluster.pools.items()
        if all(pool.labels.get(k) == v for k, v in pool_selector.items())
        and all(pool.spec.node_labels(name).get(k) == v for k, v in (node_selector or {}).items())
    )
    return Ask(
        memory_mib=gpu.memory_mib,
        gpus=gpu.gpus,
        capacity_types=frozenset(capacity_types),
        gpu_models=frozenset(gpu_models),
        pools=selected,
    )


def ask_for(spec: InferencePoolSpec, cluster: Cluster, base: bool = False) -> Ask:
    """An InferencePool replica's ask (the placer and the autoscaler must agree on it): the
    pool's, or on-demand only for a replica of its on-demand base."""
    return make_ask(
        spec.gpu,
        [CapacityType.ON_DEMAND.value] if base else spec.capacity_types,
        spec.gpu_models,
        spec.node_pool_selector,
        cluster,
        spec.template.spec.node_selector,
    )
