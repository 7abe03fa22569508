"""One real control plane per test session: etcd, kube-apiserver, controller-manager, scheduler,
KWOK.

Tests isolate themselves with their own namespace and their own GPUNodePool (selected by a
unique label), so they share the cluster without sharing GPUs.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from gpucost.api import common
from gpucost.devcluster import binaries
from gpucost.devcluster.controlplane import ControlPlane, alive, free_port, poll, reap_orphans
from gpucost.devcluster.nodes import create_pool_nodes
from gpucost.devcluster.operatorproc import GatewayProcess, OperatorProcess
from gpucost.devcluster.prometheus import PrometheusServer
from gpucost.devcluster.serving import Harness, check_pod_network

ROOT = Path(__file__).resolve().parents[2]
AWS_PRICES = ROOT.parent / "shared" / "data" / "prices" / "aws_ec2_gpu_linux_ondemand_spot.csv"
PRICE_CONFIGMAP = "gpucost-prices/prices"
pytestmark = pytest.mark.integration


class Cluster:
    """kubectl against the test control plane, plus polling helpers."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def kubectl(self, *args: str, check: bool = True, input: str | None = None):
        return self.cp.kubectl(*args, check=check, input=input)

    def apply(self, obj: dict[str, Any] | str, check: bool = True):
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.kubectl("apply", "-f", "-", check=check, input=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        out = self.kubectl(*args, check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.kubectl(*args).stdout)["items"]

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        return poll(what, check, timeout)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    return common.condition((obj or {}).get("status"), type_)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kills", type=int, default=30, help="SIGKILLs of the operator in test_kill (CI: 30)"
    )


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    try:
        binaries.require()
    except binaries.ToolsMissing as e:
        pytest.fail(str(e), pytrace=False)  # a missing tool fails, it never skips
    # One folder for every run's clusters, so a run that was killed (no teardown) is cleaned up
    # here.
    root = binaries.cache_root() / "test-clusters"
    reap_orphans(root)
    cp = ControlPlane(f"gpucost-test-{uuid.uuid4().hex[:6]}", root)
    cp.start()
    try:
        cp.kubectl("apply", "-f", str(ROOT / "crds"))
        # Server-side: Cluster API's CRDs are too big for client-side apply's last-applied
        # annotation.
        cp.kubectl("apply", "--server-side", "-f", str(binaries.capi_crds()))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for example in ("gpunodepool-a100-on-demand.yaml", "gpunodepool-a10g-spot.yaml"):
            create_pool_nodes(cp, yaml.safe_load((ROOT / "examples" / example).read_text()))
        yield cp
    finally:
        if request.session.testsfailed and cp.logs.exists():
            # Keep the evidence: stop() deletes the cluster folder with its logs.
            kept = shutil.copytree(cp.logs, tmp_path_factory.getbasetemp() / "control-plane-logs")
            print(f"\ncontrol-plane logs kept in {kept}")
        pids = cp.pids()
        cp.stop()
        leftovers = [p for p in pids if alive(p)]
        assert not leftovers, f"control-plane processes left behind: {leftovers}"


class GPUExporter:
    """What DCGM exporter would expose for the fake nodes: tests set each node's GPU utilization."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.util = Gauge(
            "DCGM_FI_DEV_GPU_UTIL",
            "GPU utilization (%)",
            ["Hostname", "gpu"],
            registry=self.registry,
        )
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    def set(self, node: str, percent: float, gpu: int = 0) -> None:
        self.util.labels(Hostname=node, gpu=str(gpu)).set(percent)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def gpu_exporter() -> Iterator[GPUExporter]:
    exporter = GPUExporter()
    yield exporter
    exporter.stop()


@pytest.fixture(scope="session")
def operator_metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def replica_targets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served replicas' /metrics, for Prometheus (file_sd) and the serving harness."""
    return tmp_path_factory.mktemp("replica-targets") / "replicas.json"


@pytest.fixture(scope="session")
def prometheus(
    gpu_exporter: GPUExporter,
    operator_metrics_port: int,
    replica_targets: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusServer]:
    """Scrapes the DCGM-style exporter, the operator's own /metrics and the served replicas."""
    targets = [f"127.0.0.1:{gpu_exporter.port}", f"127.0.0.1:{operator_metrics_port}"]
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), targets, replicas_file=replica_targets
    )
    try:
        server.start()
    except binaries.ToolsMissing as e:
        pytest.fail(str(e), pytrace=False)  # a missing tool fails, it never skips
    yield server
    server.stop()


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    operator_metrics_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        control_plane.kubeconfig,
        tmp_path_factory.mktemp("operator") / "operator.log",
        resync_seconds=1.0,
        env={
            "GPUCOST_PROMETHEUS_URL": prometheus.url,
            "GPUCOST_COST_WRITE_SECONDS": "1",
            "GPUCOST_BUDGET_INTERVAL": "1",
            "GPUCOST_DEMAND_INTERVAL": "1",
            # Pools without pricePerHour: AWS's snapshot, then a ConfigMap tests edit.
            "GPUCOST_PRICE_SOURCES": f"{AWS_PRICES},configmap:{PRICE_CONFIGMAP}",
            "GPUCOST_PRICE_REFRESH_SECONDS": "1",
            "GPUCOST_TOKEN_INTERVAL": "1",
            "GPUCOST_TOKEN_WINDOW_SECONDS": "600",
        },
        metrics_port=operator_metrics_port,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        assert proc.proc is not None and proc.proc.poll() is not None
        # A handler that failed (kopf retries it) or a worker thread that caught an exception both
        # log a traceback: the session fails on any, so a swallowed error can't pass unnoticed.
        tracebacks = proc.log.read_text(errors="replace").count("Traceback (most recent call last)")
        assert tracebacks == 0, f"{tracebacks} traceback(s) in the operator log {proc.log}"


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that records each POSTed JSON body; it can refuse the first
    ``fail_first`` with HTTP 503, as an Alertmanager that is restarting does."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.refused = 0
        self.fail_first = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.refused < receiver.fail_first:
                    receiver.refused += 1
                    self.send_response(503)
                else:
                    receiver.bodies.append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="session")
def serving(control_plane: ControlPlane, replica_targets: Path) -> Iterator[Harness]:
    """A real server on each served replica's pod IP (devcluster.serving), for the session."""
    try:
        check_pod_network()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)  # never a skip
    harness = Harness(control_plane.kubeconfig, replica_targets)
    harness.start()
    yield harness
    harness.stop()


@pytest.fixture
def cluster(control_plane: ControlPlane, operator: OperatorProcess) -> Cluster:
    return Cluster(control_plane)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = (
        f"t-{request.node.name[5:30].replace('_', '-').strip('-').lower()}-{uuid.uuid4().hex[:4]}"
    )
    cluster.kubectl("create", "namespace", name)
    cluster.cp.wait_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def gpu_pool(cluster: Cluster, namespace: str) -> Callable[..., str]:
    """Make a GPUNodePool only this test selects (label test=<namespace>) with fake nodes."""
    made: list[str] = []

    def make(
        nodes: int = 1,
        gpus: int = 2,
        memory_mib: int = 81920,
        capacity_type: str = "on-demand",
        **spec: Any,
    ) -> str:
        """Fixed at ``nodes`` nodes unless the test gives minNodes/maxNodes: the autoscaler leaves
        it be."""
        name = f"{namespace}-{len(made)}"
        if "minNodes" not in spec and "maxNodes" not in spec:
            spec.update(minNodes=nodes, maxNodes=nodes)
        manifest = {
            "apiVersion": "gpucost.dev/v1alpha1",
            "kind": "GPUNodePool",
            "metadata": {"name": name, "labels": {"test": namespace}},
            "spec": {
                "instanceType": "test.large",
                "capacityType": capacity_type,
                "pricePerHour": 4.0,
                "gpu": {"model": "NVIDIA-A100-SXM4-80GB", "memoryMiB": memory_mib, "count": gpus},
                "cpu": "64",
                "memory": "512Gi",
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                **spec,
            },
        }
        create_pool_nodes(cluster.cp, manifest, nodes)
        made.append(name)
        return name

    yield make
    for name in made:
        cluster.kubectl("delete", "gpunodepool", name, "--wait=false", check=False)
        cluster.kubectl(
            "delete", "node", "-l", f"gpucost.dev/nodepool={name}", "--wait=false", check=False
        )


@pytest.fixture
def gateway(cluster: Cluster, tmp_path: Path) -> Iterator[GatewayProcess]:
    """``gpucost gateway`` for one test, on its own port."""
    proc = GatewayProcess(cluster.cp.kubeconfig, tmp_path / "gateway.log")
    proc.start()
    yield proc
    proc.stop()
    assert "Traceback" not in proc.log.read_text(errors="replace"), proc.tail()
