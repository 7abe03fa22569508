"""InferencePools serve for real: requests answered by replicas through the pool's endpoints,
rollouts that never dip below capacity, the engine told its slice, scale, inference extension."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from pathlib import Path

import aiohttp
import pytest

from gpucost import names
from gpucost.core.engine import flag_value
from gpucost.devcluster.controlplane import SERVE
from gpucost.devcluster.serving import Harness, Traffic, ready_endpoints
from tests.integration.conftest import Cluster, condition
from tests.integration.test_inferencepool import pool

KIND = "inferencepools.gpucost.dev"
EXTENSION_CRD = (
    Path(__file__).resolve().parents[3]
    / "shared/crds/gateway-api-inference-extension/inference.networking.k8s.io_inferencepools.yaml"
)
A100 = 81920


def served(name: str, namespace: str, replicas: int, image: str = "vllm/vllm-openai:A", **spec):
    """A vLLM pool whose replicas the harness serves: a small model (2 GB of weights), loaded in a
    second, probed every second."""
    extra_env = spec.pop("env", [])
    body = pool(
        name,
        namespace,
        replicas,
        image=image,
        gpu={"memoryMiB": 20000},
        env=[
            {"name": "SIM_WEIGHTS_MIB", "value": "2000"},
            {"name": "SIM_LOAD_SECONDS", "value": "1"},
            *extra_env,
        ],
        probes={"readiness": {"periodSeconds": 1}},
        template={"metadata": {"annotations": {SERVE: "true"}}},
        **spec,
    )
    return body


def replica_pods(cluster: Cluster, namespace: str, name: str) -> list[dict]:
    return cluster.list("pods", namespace, f"{names.LABEL_POOL}={name}")


def ready(pods: list[dict]) -> list[dict]:
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and condition(p, "Ready").get("status") == "True"
    ]


def endpoints(serving: Harness, namespace: str, name: str) -> list[str]:
    return ready_endpoints(serving.core, namespace, name)


def rolled_out(cluster: Cluster, namespace: str, name: str, replicas: int):
    obj = cluster.get(KIND, name, namespace) or {}
    status = obj.get("status") or {}
    done = (
        status.get("updateRevision")
        and status.get("currentRevision") == status.get("updateRevision")
        and status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
        and condition(obj, "Progressing").get("reason") == "NewRevisionAvailable"
    )
    return obj if done else None


def running(cluster: Cluster, namespace: str, gpu_pool, replicas: int, gpus: int) -> None:
    """A one-node GPU pool of ``gpus`` A100s and the served pool llm rolled out on it."""
    gpu_pool(nodes=1, gpus=gpus)
    cluster.apply(served("llm", namespace, replicas))
    cluster.wait(
        f"{replicas} Ready", lambda: rolled_out(cluster, namespace, "llm", replicas), timeout=90
    )


def test_a_request_is_answered_through_the_pools_endpoint(cluster, namespace, gpu_pool, serving):
    gpu_pool(nodes=1, gpus=1)
    cluster.apply(served("llm", namespace, 2))
    got = cluster.wait("2 Ready endpoints", lambda: len(endpoints(serving, namespace, "llm")) == 2)
    assert got
    obj = cluster.get(KIND, "llm", namespace)
    assert obj["status"]["endpoint"] == f"http://llm.{namespace}.svc:8000"
    assert (
        obj["status"]["selector"]
        == f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_POOL}=llm"
    )
    service = cluster.get("service", "llm", namespace)
    assert service["spec"]["selector"][names.LABEL_POOL] == "llm"
    assert service["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    pod_ips = sorted(
        f"{p['status']['podIP']}:8000" for p in ready(replica_pods(cluster, namespace, "llm"))
    )
    assert endpoints(serving, namespace, "llm") == pod_ips

    async def ask() -> dict:
        async with aiohttp.ClientSession() as s:
            target = endpoints(serving, namespace, "llm")[0]
            body = {"model": "llm", "prompt": "Say hi", "max_tokens": 4}
            async with s.post(f"http://{target}/v1/completions", json=body) as r:
                assert r.status == 200
                return await r.json()

    answer = asyncio.run(ask())
    assert answer["usage"]["completion_tokens"] == 4 and answer["choices"][0]["text"]


def test_rollout_under_streaming_traffic_drops_nothing_and_never_dips_below_replicas(
    cluster, namespace, gpu_pool, serving
):
    running(cluster, namespace, gpu_pool, 3, gpus=2)
    first = cluster.get(KIND, "llm", namespace)["status"]["updateRevision"]
    low = [3]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            low[0] = min(low[0], len(ready(replica_pods(cluster, namespace, "llm"))))

    watcher = threading.Thread(target=watch, daemon=True)
    with Traffic(serving, namespace, "llm") as load:
        cluster.wait("traffic flowing", lambda: load.ok >= 20)
        watcher.start()
        cluster.kubectl(
            "patch", KIND, "llm", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"image": "vllm/vllm-openai:B"}}),
        )  # fmt: skip
        # the old revision's finished status is not the rollout to B being done
        done = cluster.wait(
            "the rollout to B",
            lambda: (
                (obj := rolled_out(cluster, namespace, "llm", 3))
                and obj["status"]["updateRevision"] != first
                and obj
            ),
            timeout=120,
        )
        before = load.ok
        cluster.wait("traffic on the new replicas", lambda: load.ok >= before + 20)
    watching.set()
    watcher.join()
    assert load.failed == [], load.failed[:5]
    assert low[0] >= 3, f"only {low[0]} Ready replicas during the rollout"
    assert done["status"]["updateRevision"] != first
    pods = replica_pods(cluster, namespace, "llm")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"vllm/vllm-openai:B"}
    assert {p["metadata"]["labels"][names.LABEL_REVISION] for p in pods} == {
        done["status"]["updateRevision"]
    }


def test_a_rollout_that_never_gets_ready_stops_at_the_deadline_with_the_old_replicas_serving(
    cluster, namespace, gpu_pool, serving
):
    running(cluster, namespace, gpu_pool, 2, gpus=1)
    old = {p["metadata"]["name"] for p in replica_pods(cluster, namespace, "llm")}
    stuck = served(
        "llm", namespace, 2, progressDeadlineSeconds=8,
        env=[{"name": "SIM_LOAD_SECONDS", "value": "100000"}],
    )  # fmt: skip
    stuck["spec"]["env"] = [e for e in stuck["spec"]["env"] if e["value"] != "1"]
    cluster.apply(stuck)

    def stopped():
        obj = cluster.get(KIND, "llm", namespace)
        progressing = condition(obj, "Progressing")
        return obj if progressing.get("reason") == "ProgressDeadlineExceeded" else None

    obj = cluster.wait("ProgressDeadlineExceeded", stopped, timeout=60)
    assert condition(obj, "Progressing")["status"] == "False"
    cluster.wait(
        "only the old replicas left",
        lambda: {p["metadata"]["name"] for p in replica_pods(cluster, namespace, "llm")} == old,
    )
    assert len(endpoints(serving, namespace, "llm")) == 2
    assert obj["status"]["currentRevision"] != obj["status"]["updateRevision"]


def test_a_new_slice_re_places_replicas_and_the_engine_flag_follows_it(
    cluster, namespace, gpu_pool, serving
):
    running(cluster, namespace, gpu_pool, 2, gpus=2)
    cluster.kubectl(
        "patch", KIND, "llm", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"gpu": {"memoryMiB": 30000}}}),
    )  # fmt: skip

    def resliced():
        pods = replica_pods(cluster, namespace, "llm")
        done = rolled_out(cluster, namespace, "llm", 2)
        sizes = {p["metadata"]["annotations"][names.ANNOTATION_GPU_MEMORY] for p in pods}
        return pods if done and sizes == {"30000"} else None

    pods = cluster.wait("replicas on 30000 MiB slices", resliced, timeout=120)
    for p in pods:
        args = p["spec"]["containers"][0]["args"]
        assert (
            float(flag_value(args, ["--gpu-memory-utilization"]))
            == math.floor(1000 * 30000 / A100) / 1000
        )
    assert not [k for k in serving.failures if k.startswith(f"{namespace}/")]


def test_args_that_contradict_the_slice_are_refused_and_nothing_running_is_touched(
    cluster, namespace, gpu_pool, serving
):
    running(cluster, namespace, gpu_pool, 2, gpus=1)
    before = {p["metadata"]["uid"] for p in replica_pods(cluster, namespace, "llm")}
    cluster.apply(served("llm", namespace, 2, args=["--gpu-memory-utilization", "0.95"]))

    def refused():
        obj = cluster.get(KIND, "llm", namespace)
        ok = condition(obj, "Ready").get("reason") == "InvalidSpec"
        return obj if ok and obj["status"].get("observedGeneration") == 2 else None

    obj = cluster.wait("InvalidSpec", refused)
    message = condition(obj, "Ready")["message"]
    assert "--gpu-memory-utilization 0.95" in message and "20000 MiB slice" in message
    assert condition(obj, "Progressing")["reason"] == "InvalidSpec"
    assert {p["metadata"]["uid"] for p in replica_pods(cluster, namespace, "llm")} == before
    assert len(endpoints(serving, namespace, "llm")) == 2


@pytest.mark.parametrize(
    ("template", "path"),
    [
        (
            {"metadata": {"labels": {names.LABEL_REPLICA: "7"}}},
            f'spec.template.metadata.labels["{names.LABEL_REPLICA}"]',
        ),
        (  # caught by the API server's pod validation, its own path quoted
            {"spec": {"volumeMounts": [{"name": "cache", "mountPath": "/models"}]}},
            "spec.containers[0].volumeMounts[0].name",
        ),
    ],
)  # fmt: skip
def test_a_bad_template_is_refused_with_the_field_path_and_nothing_deleted(
    cluster, namespace, gpu_pool, serving, template, path
):
    running(cluster, namespace, gpu_pool, 1, gpus=1)
    before = {p["metadata"]["uid"] for p in replica_pods(cluster, namespace, "llm")}
    bad = served("llm", namespace, 1)
    bad["spec"]["template"] = {
        "metadata": {"annotations": {SERVE: "true"}, **template.get("metadata", {})},
        **({"spec": template["spec"]} if "spec" in template else {}),
    }
    cluster.apply(bad)

    def refused():
        obj = cluster.get(KIND, "llm", namespace)
        return obj if condition(obj, "Progressing").get("reason") == "InvalidSpec" else None

    obj = cluster.wait("InvalidSpec", refused)
    assert path in condition(obj, "Progressing")["message"]
    assert {p["metadata"]["uid"] for p in replica_pods(cluster, namespace, "llm")} == before
    assert len(endpoints(serving, namespace, "llm")) == 1


def test_kubectl_scale_drives_the_pool(cluster, namespace, gpu_pool, serving):
    running(cluster, namespace, gpu_pool, 2, gpus=2)
    cluster.kubectl("scale", "ipool", "llm", "-n", namespace, "--replicas", "5")
    cluster.wait("5 Ready", lambda: rolled_out(cluster, namespace, "llm", 5), timeout=90)
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw",
            f"/apis/gpucost.dev/v1alpha1/namespaces/{namespace}/inferencepools/llm/scale",
        ).stdout
    )  # fmt: skip
    assert scale["spec"]["replicas"] == 5 and scale["status"]["replicas"] == 5
    assert (
        scale["status"]["selector"]
        == f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_POOL}=llm"
    )
    cluster.wait("5 endpoints", lambda: len(endpoints(serving, namespace, "llm")) == 5)


def test_the_inference_extension_pool_selects_exactly_the_ready_replicas(
    cluster, namespace, gpu_pool, serving
):
    cluster.kubectl("apply", "--server-side", "-f", str(EXTENSION_CRD))
    cluster.wait(
        "the extension CRD served",
        lambda: "inferencepools" in cluster.kubectl(
            "api-resources", "--api-group=inference.networking.k8s.io", "-o", "name",
            check=False,
        ).stdout,
    )  # fmt: skip
    running(cluster, namespace, gpu_pool, 3, gpus=1)
    qualified = "inferencepools.inference.networking.k8s.io"
    ext = cluster.wait(
        "the extension's InferencePool", lambda: cluster.get(qualified, "llm", namespace)
    )
    labels = ext["spec"]["selector"]["matchLabels"]
    assert ext["spec"]["targetPorts"] == [{"number": 8000}]
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    selected = cluster.list("pods", namespace, selector)
    ours = replica_pods(cluster, namespace, "llm")
    assert {p["metadata"]["name"] for p in selected} == {p["metadata"]["name"] for p in ours}
    assert sorted(f"{p['status']['podIP']}:8000" for p in ready(selected)) == endpoints(
        serving, namespace, "llm"
    )
    # ours and theirs, told apart by their full names
    assert cluster.get("inferencepools.gpucost.dev", "llm", namespace)["spec"]["image"]
    opted_out = served("llm", namespace, 3, inferenceExtension={"enabled": False})
    cluster.apply(opted_out)
    cluster.wait(
        "the extension's pool removed",
        lambda: cluster.get(qualified, "llm", namespace) is None,
        timeout=60,
    )
