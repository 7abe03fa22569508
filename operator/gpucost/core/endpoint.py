"""The objects that put an InferencePool's replicas behind one address: its Service, the Gateway
API Inference Extension InferencePool that conformant inference gateways route by, and a
PodDisruptionBudget. Each is owned by the pool, so the garbage collector removes it with it."""

from __future__ import annotations

from typing import Any

from gpucost import names
from gpucost.api import API_VERSION
from gpucost.api.inferencepool import InferencePoolSpec

EXTENSION_GROUP = "inference.networking.k8s.io"
EXTENSION_VERSION = "v1"
EXTENSION_PLURAL = "inferencepools"


def selector(name: str) -> dict[str, str]:
    """What every object of the pool selects its replicas by (pool names are unique in a
    namespace; a uid would change when a GitOps tool re-creates the pool)."""
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_POOL: name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(name).items())


def endpoint(name: str, namespace: str, spec: InferencePoolSpec) -> str:
    return f"http://{name}.{namespace}.svc:{spec.serving_port}"


def _meta(name: str, namespace: str, uid: str, annotations: dict[str, str] | None = None) -> dict:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_POOL: name},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "InferencePool",
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def service(name: str, namespace: str, uid: str, spec: InferencePoolSpec) -> dict[str, Any]:
    """Selects the Ready replicas (the endpoint slice controller leaves the others out)."""
    port = spec.serving_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, uid, spec.service.annotations),
        "spec": {
            "type": spec.service.type,
            "selector": selector(name),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def extension_pool(name: str, namespace: str, uid: str, spec: InferencePoolSpec) -> dict[str, Any]:
    """inference.networking.k8s.io/v1 InferencePool over the same pods and port."""
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector(name)},
        "targetPorts": [{"number": spec.serving_port}],
    }
    ref = spec.inference_extension.endpoint_picker_ref
    if ref is not None:
        body["endpointPickerRef"] = ref.wire()
    return {
        "apiVersion": f"{EXTENSION_GROUP}/{EXTENSION_VERSION}",
        "kind": "InferencePool",
        "metadata": _meta(name, namespace, uid),
        "spec": body,
    }


def disruption_budget(
    name: str, namespace: str, uid: str, spec: InferencePoolSpec
) -> dict[str, Any] | None:
    if spec.pod_disruption_budget is None:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, uid),
        "spec": {
            "maxUnavailable": spec.pod_disruption_budget.max_unavailable,
            "selector": {"matchLabels": selector(name)},
        },
    }


def pdb_ref(name: str, namespace: str) -> dict[str, Any]:
    """Enough of the pool's PodDisruptionBudget to name it (to remove it when unset)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
    }
