"""The Kubernetes adapter against the real API server, where its answers depend on the server."""

from __future__ import annotations

import json
import uuid

import kubernetes

from gpucost.adapters.kube import Kube


def test_creating_in_a_namespace_being_deleted_is_a_no_not_an_error(cluster):
    ns = f"t-terminating-{uuid.uuid4().hex[:4]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.cp.wait_namespace(ns)
    # A finalizer nobody removes keeps the namespace Terminating while the test runs.
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hold", "namespace": ns, "finalizers": ["gpucost.dev/test-hold"]},
        }
    )
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    cluster.wait(
        "namespace terminating",
        lambda: cluster.get("namespace", ns)["status"]["phase"] == "Terminating",
    )
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(cluster.cp.kubeconfig)))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "late", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "late", "namespace": ns},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            }
        },
    }
    try:
        assert kube.create_pod(pod) is False and kube.create_job(job) is False
    finally:
        cluster.kubectl(
            "patch",
            "configmap",
            "hold",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"finalizers": None}}),
        )
    cluster.wait("namespace gone", lambda: cluster.get("namespace", ns) is None)


def test_marking_a_node_that_was_removed_meanwhile_is_a_no_not_an_error(cluster):
    """The autoscaler lists nodes, then annotates them; a node removed in between must not raise."""
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(cluster.cp.kubeconfig)))
    name = f"gone-{uuid.uuid4().hex[:6]}"
    assert kube.get_node(name) is None
    kube.patch_node(name, {"metadata": {"annotations": {"gpucost.dev/idle-since": None}}})
    assert kube.get_node(name) is None
