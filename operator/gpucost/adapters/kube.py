"""Kubernetes API access through the official client, returning plain dicts.

Dicts (not the client's generated classes) because the pure core reads API objects as dicts and
the wire names stay the ones in the Kubernetes docs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from gpucost import names
from gpucost.api import GROUP, VERSION

Obj = dict[str, Any]
T = TypeVar("T")
IN_FLIGHT = 8
"""Concurrent writes of one batch."""
CONNECTIONS = 32
"""Kept-alive connections to the API server: the client's default (5 per CPU) is below what a
batch's writes, the autoscaler and kopf's sync handlers use at once, and every request beyond it
opened a new TLS connection (a fifth of the operator's CPU in a burst)."""


def configure() -> None:
    """In-cluster service account when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    config = kubernetes.client.Configuration.get_default_copy()
    config.connection_pool_maxsize = CONNECTIONS
    kubernetes.client.Configuration.set_default(config)


def _json(resp: Any) -> Obj:
    return json.loads(resp.data)


def namespace_terminating(e: ApiException) -> bool:
    """The API refuses new objects in a namespace being deleted (403, NamespaceTerminating)."""
    body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else str(e.body or "")
    return e.status == 403 and "NamespaceTerminating" in body


def unless_gone(call: Callable[[], T]) -> T | None:
    """The call's result, or None when its object is not there (404): gone is an answer here."""
    try:
        return call()
    except ApiException as e:
        if e.status == 404:
            return None
        raise


PLURALS = {
    "Service": "services",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "InferencePool": "inferencepools",
}


def _path(obj: Obj) -> str:
    """The REST path of a namespaced object from its apiVersion, kind and metadata."""
    api, meta = obj["apiVersion"], obj["metadata"]
    prefix = "/api/v1" if api == "v1" else f"/apis/{api}"
    return f"{prefix}/namespaces/{meta['namespace']}/{PLURALS[obj['kind']]}/{meta['name']}"


def _message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError):
        return str(e.reason)


def _created(create: Callable[..., Any], obj: Obj) -> bool:
    """False when an object of that name exists already (a retried reconcile) or its namespace is
    being deleted (its owner goes with it)."""
    try:
        create(obj["metadata"]["namespace"], obj, _preload_content=False)
    except ApiException as e:
        if e.status == 409 or namespace_terminating(e):
            return False
        raise
    return True


class Kube:
    """Thin façade over the calls the operator makes; one instance per process."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None) -> None:
        self.client = api_client or kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.batch = kubernetes.client.BatchV1Api(self.client)

    def nodes(self) -> list[Obj]:
        return _json(self.core.list_node(_preload_content=False))["items"]

    def create_node(self, node: Obj) -> None:
        self.core.create_node(node, _preload_content=False)

    def create_nodes(self, nodes: list[Obj]) -> None:
        """At once, a few requests in flight: one at a time, 400 nodes took 25 s here."""
        self._each(self.create_node, nodes)

    def delete_node(self, name: str) -> None:
        unless_gone(lambda: self.core.delete_node(name, _preload_content=False))

    def patch_node(self, name: str, patch: Obj) -> None:
        """Merge patch (a None value removes an annotation). A node deleted since it was listed has
        nothing left to mark, so a 404 is no error (the autoscaler's tick races node removal)."""
        unless_gone(lambda: self.core.patch_node(name, patch, _preload_content=False))

    def patch_node_status(self, name: str, patch: Obj) -> None:
        """Strategic merge: conditions merge by type, so the kubelet's own stay as they are."""
        self.core.patch_node_status(name, patch, _preload_content=False)

    def get_node(self, name: str) -> Obj | None:
        return unless_gone(lambda: _json(self.core.read_node(name, _preload_content=False)))

    def post_event(self, obj: Obj, type: str, reason: str, message: str, component: str) -> None:
        """A core/v1 Event on ``obj``, from a process that is not a kopf operator (the node
        agent)."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj["kind"],
                "name": meta["name"],
                "uid": meta.get("uid"),
                **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.core.create_namespaced_event(namespace, event, _preload_content=False)

    def last_warning(self, kind: str, name: str) -> str | None:
        """The newest Warning Event's reason and message on a cluster-scoped object (its Events
        live in ``default``): why another controller gave up on it."""
        events = _json(
            self.core.list_namespaced_event(
                "default",
                field_selector=f"involvedObject.kind={kind},involvedObject.name={name},type=Warning",
                _preload_content=False,
            )
        )["items"]
        if not events:
            return None
        last = max(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return f"{last.get('reason')}: {last.get('message')}"

    def pods(self) -> list[Obj]:
        """Every pod in the cluster: what runs on each node, and what is pending anywhere."""
        return _json(self.core.list_pod_for_all_namespaces(_preload_content=False))["items"]

    def evict(self, namespace: str, name: str) -> bool:
        """Through the Eviction API, so PodDisruptionBudgets hold; False when a budget refuses
        now."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body, _preload_content=False)
        except ApiException as e:
            if e.status == 429:
                return False
            if e.status != 404:
                raise
        return True

    def inference_pools(self) -> list[Obj]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "inferencepools")["items"]

    def node_pools(self) -> list[Obj]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "gpunodepools")["items"]

    def compression_jobs(self) -> list[Obj]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "compressionjobs")["items"]

    def budgets(self, namespace: str | None = None) -> list[Obj]:
        """The CostBudgets of a namespace (every namespace when None) and every
        ClusterCostBudget."""
        if namespace is None:
            namespaced = self.custom.list_cluster_custom_object(GROUP, VERSION, "costbudgets")[
                "items"
            ]
        else:
            namespaced = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "costbudgets"
            )["items"]
        return (
            namespaced
            + self.custom.list_cluster_custom_object(GROUP, VERSION, "clustercostbudgets")["items"]
        )

    def namespaces(self, label_selector: str = "") -> list[str]:
        resp = self.core.list_namespace(label_selector=label_selector, _preload_content=False)
        return sorted(o["metadata"]["name"] for o in _json(resp)["items"])

    def placed_pods(self, owner_uid: str | None = None, node: str | None = None) -> list[Obj]:
        """Pods the operator placed, cluster-wide (GPU allocation spans namespaces), or on one
        node."""
        selector = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
        if owner_uid:
            selector += f",{names.LABEL_OWNER_UID}={owner_uid}"
        resp = self.core.list_pod_for_all_namespaces(
            label_selector=selector,
            field_selector=f"spec.nodeName={node}" if node else None,
            _preload_content=False,
        )
        return _json(resp)["items"]

    def create_pod(self, pod: Obj) -> bool:
        return _created(self.core.create_namespaced_pod, pod)

    def _each(self, call: Callable[[Obj], T], objs: list[Obj]) -> list[T]:
        if len(objs) <= 1:
            return [call(o) for o in objs]
        with ThreadPoolExecutor(max_workers=min(IN_FLIGHT, len(objs))) as pool:
            futures = [pool.submit(call, o) for o in objs]
        return [f.result() for f in futures]

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        """``force`` for a pod bound to a node that is gone: no kubelet will confirm it stopped."""
        unless_gone(
            lambda: self.core.delete_namespaced_pod(
                name, namespace, grace_period_seconds=0 if force else None, _preload_content=False
            )
        )

    def create_pods(self, pods: list[Obj]) -> list[bool | str]:
        """``create_pod`` for each, a few requests in flight (a burst's replicas, one at a time,
        went at 15 pods/s here); the first failure is raised once all have been tried. A pod the
        API server refuses as invalid (422) is its message (field paths included) rather than an
        exception: one bad template is a condition, not a failed reconcile."""

        def create(pod: Obj) -> bool | str:
            try:
                return self.create_pod(pod)
            except ApiException as e:
                if e.status != 422:
                    raise
                return _message(e)

        return self._each(create, pods)

    def _raw(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> Obj:
        """One request to a path the generated client has no method for (a CRD of another
        project, server-side apply); ApiException on an HTTP error, as the typed calls do."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.client.call_api(*request)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiException(http_resp=resp, body=data.decode(errors="replace"), data=None)
        return json.loads(data) if data else {}

    def apply(self, obj: Obj) -> None:
        """Server-side apply as the operator's field manager: the fields it owns are set to
        exactly these, and a field another manager (an HPA, a user) owns elsewhere is kept."""
        self._raw(
            "PATCH",
            _path(obj),
            obj,
            [("fieldManager", names.MANAGED_BY), ("force", "true")],
            "application/apply-patch+yaml",
        )

    def delete_object(self, obj: Obj) -> None:
        """Delete the object ``obj`` names (its kind, namespace and name); gone already is fine."""
        unless_gone(lambda: self._raw("DELETE", _path(obj)))

    def served(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``group/version`` (a CRD is installed)."""
        found = unless_gone(lambda: self._raw("GET", f"/apis/{group}/{version}"))
        return any(r.get("name") == plural for r in (found or {}).get("resources") or [])

    def create_job(self, job: Obj) -> bool:
        return _created(self.batch.create_namespaced_job, job)

    def get_job(self, namespace: str, name: str) -> Obj | None:
        return unless_gone(
            lambda: _json(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        )

    def delete_job(self, namespace: str, name: str) -> None:
        """With its pods (background propagation), as `kubectl delete job` does."""
        unless_gone(
            lambda: self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", _preload_content=False
            )
        )

    def delete_jobs(self, namespace: str, label_selector: str) -> None:
        """Every Job the selector matches, with its pods."""
        self.batch.delete_collection_namespaced_job(
            namespace,
            label_selector=label_selector,
            propagation_policy="Background",
            _preload_content=False,
        )

    def scale_inference_pool(
        self, namespace: str, name: str, replicas: int, resource_version: str
    ) -> str | None:
        """Through the scale subresource, as an HPA writes it, only if the pool is still at
        ``resource_version`` (the count was decided from it): its new resourceVersion, or None
        when it changed meanwhile (409) or is gone."""
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        try:
            scale = unless_gone(
                lambda: self.custom.patch_namespaced_custom_object_scale(
                    GROUP, VERSION, namespace, "inferencepools", name, body
                )
            )
        except ApiException as e:
            if e.status == 409:
                return None
            raise
        return None if scale is None else scale["metadata"]["resourceVersion"]

    def autoscalers(self, namespace: str) -> list[Obj]:
        """The namespace's HorizontalPodAutoscalers (autoscaling/v2)."""
        return self._raw(
            "GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
        ).get("items", [])

    def get_inference_pool(self, namespace: str, name: str) -> Obj | None:
        return self.get_object("inferencepools", name, namespace)

    def get_object(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """One of our objects, or None when it is gone."""
        if namespace is None:
            return unless_gone(
                lambda: self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
            )
        return unless_gone(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        )

    def patch_status(
        self,
        plural: str,
        name: str,
        status: Obj,
        namespace: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        """False when the object changed since ``resource_version`` was read (409: the status was
        computed from an older one and must not land) or was deleted; a no-op then."""
        body: Obj = {"status": status}
        if resource_version is not None:  # a merge patch carrying it is a precondition
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            if namespace is None:
                done = unless_gone(
                    lambda: self.custom.patch_cluster_custom_object_status(
                        GROUP, VERSION, plural, name, body
                    )
                )
            else:
                done = unless_gone(
                    lambda: self.custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, namespace, plural, name, body
                    )
                )
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return done is not None

    def annotate_node_pool(self, name: str, annotations: dict[str, str | None]) -> None:
        """None removes an annotation; a pool deleted meanwhile needs none."""
        unless_gone(
            lambda: self.custom.patch_cluster_custom_object(
                GROUP, VERSION, "gpunodepools", name, {"metadata": {"annotations": annotations}}
            )
        )
