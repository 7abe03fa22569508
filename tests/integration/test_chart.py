"""The Helm chart lints, renders, applies, and its RBAC is enough for the operator and no more."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from gpucost.adapters import metrics
from gpucost.devcluster import binaries
from gpucost.devcluster.operatorproc import AgentProcess, OperatorProcess
from tests.integration.conftest import ROOT, condition
from tests.integration.test_agent import FakeNode

CHART = ROOT / "charts" / "gpu-cost-operator"
RELEASE, NS = "gpucost", "gpucost-system"
SA = f"system:serviceaccount:{NS}:{RELEASE}-gpu-cost-operator"


def helm(*args: str) -> str:
    return subprocess.run(
        ["helm", *args], env=binaries.tool_env(), text=True, capture_output=True, check=True
    ).stdout


def forbidden(log: Path) -> list[str]:
    """The log lines of API requests a component's RBAC refused."""
    return [line for line in log.read_text().splitlines() if "Forbidden" in line or " 403" in line]


def test_chart_lints_strict():
    helm("lint", "--strict", str(CHART))


def test_chart_crds_are_the_generated_ones():
    assert sorted(p.read_text() for p in (CHART / "crds").glob("*.yaml")) == sorted(
        p.read_text() for p in (ROOT / "crds").glob("*.yaml")
    )


def can(cluster, verb: str, resource: str) -> bool:
    out = cluster.kubectl("auth", "can-i", verb, resource, "--as", SA, "-A", check=False)
    return out.stdout.strip() == "yes"


def token_kubeconfig(cluster, path: Path, account: str = f"{RELEASE}-gpu-cost-operator") -> Path:
    admin = yaml.safe_load(cluster.cp.kubeconfig.read_text())
    token = cluster.kubectl("create", "token", account, "-n", NS).stdout.strip()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_rendered_chart_applies_and_the_operator_runs_on_its_rbac_alone(
    cluster, namespace, gpu_pool, operator, tmp_path
):
    rendered = helm(
        "template", RELEASE, str(CHART), "-n", NS, "--include-crds", "--set", "resyncSeconds=1"
    )
    cluster.kubectl("create", "namespace", NS, check=False)
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=rendered)
    deployment = cluster.get("deployment", f"{RELEASE}-gpu-cost-operator", NS)
    pod_spec = deployment["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]["cpu"] == "100m"

    assert can(cluster, "create", "pods") and can(
        cluster, "patch", "inferencepools.gpucost.dev/status"
    )
    assert not can(cluster, "get", "secrets")
    # The autoscaler creates, cordons and deletes nodes and drains them through evictions...
    assert can(cluster, "delete", "nodes") and can(cluster, "create", "pods/eviction")
    # ...but never deletes a pod's namespace or edits workloads it does not own.
    assert not can(cluster, "delete", "namespaces") and not can(cluster, "patch", "pods")
    assert not can(cluster, "create", "deployments.apps")

    kubeconfig = token_kubeconfig(cluster, tmp_path / "sa.kubeconfig")
    operator.stop()  # one operator at a time: the chart's runs alone, then the session's comes back
    scoped = OperatorProcess(kubeconfig, tmp_path / "sa-operator.log", resync_seconds=1.0)
    try:
        scoped.start()
        pool_name = gpu_pool(nodes=1, gpus=1)
        cluster.apply(
            {
                "apiVersion": "gpucost.dev/v1alpha1",
                "kind": "InferencePool",
                "metadata": {"name": "rbac-probe", "namespace": namespace},
                "spec": {
                    "image": "x",
                    "replicas": 2,
                    "gpu": {"memoryMiB": 1000},
                    "nodePoolSelector": {"test": namespace},
                },
            }
        )
        cluster.wait(
            "rbac-probe ready under the chart's service account",
            lambda: (
                condition(
                    cluster.get("inferencepools.gpucost.dev", "rbac-probe", namespace), "Ready"
                ).get("status")
                == "True"
            ),
        )
        cluster.wait(
            "pool status written under the chart's RBAC",
            lambda: (
                (cluster.get("gpunodepool", pool_name).get("status") or {}).get(
                    "gpuMemoryAllocatedMiB"
                )
                == 2000
            ),
        )
        cluster.wait(
            "Placed events posted",
            lambda: (
                "Placed"
                in cluster.kubectl(
                    "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
                ).stdout
            ),
        )
        # Events for pools in namespaces other tests are tearing down are refused with a 403
        # (NamespaceTerminating); any other refusal is missing RBAC.
        refused = [
            line
            for line in scoped.log.read_text().splitlines()
            if ("Forbidden" in line or " 403" in line) and "NamespaceTerminating" not in line
        ]
        assert not refused, "\n".join(refused[:5])
    finally:
        scoped.stop()
        operator.start()


def test_monitoring_objects_render_and_the_alerts_pass_promtool(tmp_path):
    rendered = helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        NS,
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "podMonitor.enabled=true",
    )
    all_docs = [d for d in yaml.safe_load_all(rendered) if d]
    docs = {d["kind"]: d for d in all_docs}
    assert {"ServiceMonitor", "PrometheusRule", "Service", "PodMonitor"} <= set(docs)
    monitors = {d["metadata"]["name"]: d for d in all_docs if d["kind"] == "ServiceMonitor"}
    operator_monitor = monitors[f"{RELEASE}-gpu-cost-operator"]
    assert operator_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The gateway's own namespace/pool labels are the pools': kept, not overwritten by its pod's.
    (gateway_endpoint,) = monitors[f"{RELEASE}-gpu-cost-operator-gateway"]["spec"]["endpoints"]
    assert gateway_endpoint["honorLabels"] is True
    gateway_service = next(
        d for d in all_docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("gateway")
    )
    wanted = monitors[f"{RELEASE}-gpu-cost-operator-gateway"]["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= gateway_service["metadata"]["labels"].items()
    relabel = docs["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {r["targetLabel"] for r in relabel} >= {"namespace", "pool"}
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert docs["PrometheusRule"]["spec"]["groups"] == alerts["groups"]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": docs["PrometheusRule"]["spec"]["groups"]}))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = sum(len(g["rules"]) for g in alerts["groups"])
    assert (
        count >= 6 and f"SUCCESS: {count} rules found" in checked.stdout
    )  # promtool read every rule


def test_dashboard_and_alerts_only_use_metrics_the_operator_exports():
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {
        family.name + suffix
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
        for suffix in suffixes[family.type]
    }
    text = (CHART / "files" / "dashboard.json").read_text() + (
        CHART / "files" / "alerts.yaml"
    ).read_text()
    used = set(re.findall(r"gpucost_[a-z_]+", text))
    assert used and used <= exported, used - exported


def test_the_agent_daemonset_runs_on_its_own_rbac_alone(cluster, namespace, gpu_pool, tmp_path):
    rendered = helm("template", RELEASE, str(CHART), "-n", NS)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    agent = f"{RELEASE}-gpu-cost-operator-agent"
    pod_spec = docs[("DaemonSet", agent)]["spec"]["template"]["spec"]
    assert pod_spec["hostPID"] is True and pod_spec["serviceAccountName"] == agent
    env = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    cluster.kubectl("create", "namespace", NS, check=False)
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=rendered)
    who = f"system:serviceaccount:{NS}:{agent}"
    assert (
        not cluster.kubectl(
            "auth", "can-i", "delete", "nodes", "--as", who, check=False
        ).stdout.strip()
        == "yes"
    )
    assert (
        not cluster.kubectl(
            "auth", "can-i", "create", "pods", "--as", who, "-A", check=False
        ).stdout.strip()
        == "yes"
    )

    node = f"{gpu_pool(1, gpus=1, isolation='watch-evict')}-0"
    fake = FakeNode(tmp_path, 1)
    proc = AgentProcess(
        token_kubeconfig(cluster, tmp_path / "agent.kubeconfig", agent),
        tmp_path / "agent.log",
        node=node,
        nvml_state=fake.state_path,
        proc_root=fake.proc,
    )
    proc.start()
    try:
        cluster.wait(
            "the agent's conditions under its own RBAC",
            lambda: (
                condition(cluster.get("node", node), "GPUCostIsolation").get("reason")
                == "WatchEvict"
            ),
        )
        assert condition(cluster.get("node", node), "GPUCostNVMLReady")["status"] == "True"
        refused = forbidden(proc.log)
        assert not refused, "\n".join(refused[:5])
    finally:
        proc.stop()


def test_the_gateway_runs_on_its_own_rbac_alone(cluster, namespace, gpu_pool, serving, tmp_path):
    import asyncio

    import aiohttp

    from gpucost.devcluster.operatorproc import GatewayProcess
    from tests.integration.test_serving import running

    rendered = helm("template", RELEASE, str(CHART), "-n", NS)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    gateway = f"{RELEASE}-gpu-cost-operator-gateway"
    deployment = docs[("Deployment", gateway)]["spec"]
    operator_selector = docs[("Deployment", f"{RELEASE}-gpu-cost-operator")]["spec"]["selector"]
    assert deployment["selector"] != operator_selector  # no Deployment selects the other's pods
    assert deployment["template"]["spec"]["serviceAccountName"] == gateway
    cluster.kubectl("create", "namespace", NS, check=False)
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=rendered)
    who = f"system:serviceaccount:{NS}:{gateway}"
    for verb, resource in (("delete", "pods"), ("get", "secrets"), ("patch", "nodes")):
        out = cluster.kubectl("auth", "can-i", verb, resource, "--as", who, "-A", check=False)
        assert out.stdout.strip() != "yes", (verb, resource)
    running(cluster, namespace, gpu_pool, 1, gpus=1)
    proc = GatewayProcess(
        token_kubeconfig(cluster, tmp_path / "gateway.kubeconfig", gateway), tmp_path / "gw.log"
    )
    proc.start()

    async def ask() -> int:
        body = {"model": f"{namespace}/llm", "prompt": "hi", "max_tokens": 2}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{proc.url}/v1/completions", json=body) as r:
                return r.status

    try:
        assert cluster.wait("answered through the gateway", lambda: asyncio.run(ask()) == 200)
        refused = forbidden(proc.log)
        assert not refused, "\n".join(refused[:5])
    finally:
        proc.stop()
