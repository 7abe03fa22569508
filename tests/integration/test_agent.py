"""The node agent against the real control plane and a KWOK node, on the fake NVML (no GPU here):
discovery on the Node, watch-evict of a pod over its slice, nvml-limit on pod cgroups, a lost GPU
that the operator stops placing on, and NVML missing — the agent keeps running through all of it."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from gpucost.devcluster.operatorproc import AgentProcess
from tests.integration.conftest import condition
from tests.integration.test_inferencepool import pool

A100 = "NVIDIA A100-SXM4-80GB"


class FakeNode:
    """The fake NVML's state file and /proc for one node, edited while its agent runs."""

    def __init__(self, root: Path, gpus: int) -> None:
        self.state_path = root / "nvml.json"
        self.proc = root / "proc"
        self.proc.mkdir()
        self.state = {
            "driver": "580.65.06",
            "memoryLimits": True,
            "gpus": [
                {
                    "uuid": f"GPU-{root.name}-{i}",
                    "name": A100,
                    "memoryMiB": 81920,
                    "utilization": 10 * i,
                    "processes": [],
                }
                for i in range(gpus)
            ],
        }
        self.save()

    def save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.state_path)  # the agent never reads half a file

    def run_in_pod(self, pid: int, pod_uid: str, gpu: int, used_mib: int) -> None:
        """A CUDA process of that pod: its cgroup in /proc, its memory in NVML."""
        (self.proc / str(pid)).mkdir(exist_ok=True)
        (self.proc / str(pid) / "cgroup").write_text(
            "0::/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{pod_uid.replace('-', '_')}.slice/cri-containerd-{pid}.scope\n"
        )
        self.state["gpus"][gpu]["processes"].append({"pid": pid, "usedMiB": used_mib})
        self.save()


@pytest.fixture
def agent_on(control_plane, tmp_path) -> Iterator:
    started: list[AgentProcess] = []

    def start(node: str, gpus: int) -> tuple[AgentProcess, FakeNode]:
        fake = FakeNode(tmp_path, gpus)
        agent = AgentProcess(
            control_plane.kubeconfig,
            tmp_path / "agent.log",
            node=node,
            nvml_state=fake.state_path,
            proc_root=fake.proc,
        )
        agent.start()
        started.append(agent)
        return agent, fake

    yield start
    for agent in started:
        alive = agent.proc is not None and agent.proc.poll() is None
        agent.stop()
        assert alive, f"the agent died: {agent.tail()}"
        assert "Traceback" not in agent.log.read_text(), agent.tail()


def scrape(agent: AgentProcess) -> str:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5
    ) as resp:
        return resp.read().decode()


def node_events(cluster, node: str, reason: str) -> list[str]:
    return cluster.kubectl(
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        f"involvedObject.kind=Node,involvedObject.name={node},reason={reason}",
        "-o",
        "name",
    ).stdout.split()


def test_discovery_and_watch_evict_of_a_pod_over_its_slice(cluster, namespace, gpu_pool, agent_on):
    node_pool = gpu_pool(1, gpus=2, isolation="watch-evict")
    node = f"{node_pool}-0"
    agent, fake = agent_on(node, 2)
    published = cluster.wait(
        "GPUs published on the node",
        lambda: (
            (n := cluster.get("node", node))
            and condition(n, "GPUCostNVMLReady").get("status") == "True"
            and n
        ),
    )
    labels = published["metadata"]["labels"]
    assert (
        labels["nvidia.com/gpu.product"],
        labels["nvidia.com/gpu.memory"],
        labels["nvidia.com/gpu.count"],
    ) == ("NVIDIA-A100-SXM4-80GB", "81920", "2")
    assert labels["nvidia.com/cuda.driver-version.full"] == "580.65.06"
    gpus = json.loads(published["metadata"]["annotations"]["gpucost.dev/gpus"])
    assert [(g["index"], g["uuid"]) for g in gpus] == [
        (0, f"GPU-{fake.state_path.parent.name}-0"),
        (1, f"GPU-{fake.state_path.parent.name}-1"),
    ]
    assert published["status"]["allocatable"]["gpucost.dev/gpu-memory"] == "163840"
    assert condition(published, "Ready")["status"] == "True"  # KWOK's own conditions are left alone
    assert condition(published, "GPUCostIsolation")["reason"] == "WatchEvict"

    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20000}))
    pod = cluster.wait(
        "the replica running",
        lambda: [
            p for p in cluster.list("pods", namespace) if p["status"].get("phase") == "Running"
        ],
    )[0]
    gpu = int(pod["metadata"]["annotations"]["gpucost.dev/gpu-indices"])
    fake.run_in_pod(4242, pod["metadata"]["uid"], gpu, 30000)  # 10,000 MiB over its slice
    fake.run_in_pod(
        4343, "0badc0de-0000-4000-8000-000000000000", 1 - gpu, 80000
    )  # not our pod: left alone
    cluster.wait(
        "the pod evicted",
        lambda: (
            cluster.get("pod", pod["metadata"]["name"], namespace) is None
            or cluster.get("pod", pod["metadata"]["name"], namespace)["metadata"]["uid"]
            != pod["metadata"]["uid"]
        ),
        timeout=60,
    )
    (event,) = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.uid={pod['metadata']['uid']},reason=GPUMemoryOverSlice",
        "-o",
        "jsonpath={.items[*].message}",
    ).stdout.splitlines()
    assert f"used 30000 MiB of its 20000 MiB slice on GPU {gpu} of {node}" in event
    metrics = scrape(agent)
    assert f'gpucost_agent_evictions_total{{node="{node}"}} 1.0' in metrics
    assert f'gpucost_agent_gpu_utilization_percent{{gpu="1",node="{node}"' in metrics


def test_nvml_limits_go_on_pod_cgroups_and_fall_back_when_the_driver_cannot(
    cluster, namespace, gpu_pool, agent_on
):
    node_pool = gpu_pool(1, gpus=1, isolation="nvml-limit")
    node = f"{node_pool}-0"
    agent, fake = agent_on(node, 1)
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20000}))
    pod = cluster.wait(
        "the replica running",
        lambda: [
            p for p in cluster.list("pods", namespace) if p["status"].get("phase") == "Running"
        ],
    )[0]
    fake.run_in_pod(5151, pod["metadata"]["uid"], 0, 1000)
    labels = f'gpu="0",namespace="{namespace}",node="{node}",pod="{pod["metadata"]["name"]}"'
    limit = f"gpucost_agent_pod_gpu_memory_limit_mib{{{labels}}} 20000.0"
    cluster.wait("the hard limit set on the pod's cgroup", lambda: limit in scrape(agent))
    assert condition(cluster.get("node", node), "GPUCostIsolation")["reason"] == "NvmlLimit"
    agent.stop()  # a restarted agent (a new NVML session) sets the limit again
    agent.start()
    cluster.wait("the limit set again after a restart", lambda: limit in scrape(agent))

    fake.state["memoryLimits"] = False  # a driver before R615
    fake.save()
    fell = cluster.wait(
        "the fallback on the node",
        lambda: (
            (n := cluster.get("node", node))
            and condition(n, "GPUCostIsolation").get("reason") == "FallbackToWatchEvict"
            and n
        ),
    )
    assert "cannot limit memory per cgroup" in condition(fell, "GPUCostIsolation")["message"]
    assert condition(fell, "GPUCostIsolation")["status"] == "True"  # protected, by the next mode
    cluster.wait(
        "a Warning event on the node", lambda: node_events(cluster, node, "FallbackToWatchEvict")
    )


def test_a_lost_gpu_is_marked_and_the_operator_stops_placing_on_it(
    cluster, namespace, gpu_pool, agent_on
):
    node_pool = gpu_pool(1, gpus=2)
    node = f"{node_pool}-0"
    agent, fake = agent_on(node, 2)
    cluster.wait(
        "agent up",
        lambda: condition(cluster.get("node", node), "GPUCostNVMLReady").get("status") == "True",
    )
    fake.state["gpus"][1]["lost"] = True
    fake.save()
    sick = cluster.wait(
        "GPU 1 unhealthy on the node",
        lambda: (
            (n := cluster.get("node", node))
            and condition(n, "GPUCostGPUsHealthy").get("status") == "False"
            and n
        ),
    )
    assert condition(sick, "GPUCostGPUsHealthy")["message"] == "GPU 1: GPU is lost"
    assert [
        g.get("healthy", True)
        for g in json.loads(sick["metadata"]["annotations"]["gpucost.dev/gpus"])
    ] == [True, False]
    assert sick["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    cluster.wait("a GPULost event", lambda: node_events(cluster, node, "GPULost"))
    cluster.apply(pool("whole", namespace, 2, gpu={"gpus": 1}))
    held = cluster.wait(
        "one replica placed, one not",
        lambda: (
            (p := cluster.get("inferencepools.gpucost.dev", "whole", namespace))
            and p.get("status", {}).get("replicas") == 1
            and p["status"].get("unplacedReplicas") == 1
            and p
        ),
    )
    assert [pl["gpuIndices"] for pl in held["status"]["placements"]] == [[0]]
    assert (
        f'gpucost_agent_gpu_healthy{{gpu="1",node="{node}",'
        f'uuid="GPU-{fake.state_path.parent.name}-1"}} 0.0' in scrape(agent)
    )


def test_nvml_missing_is_a_condition_and_the_agent_recovers_when_it_appears(
    cluster, gpu_pool, agent_on
):
    node_pool = gpu_pool(1, gpus=1)
    node = f"{node_pool}-0"
    agent, fake = agent_on(node, 1)
    cluster.wait(
        "agent up",
        lambda: condition(cluster.get("node", node), "GPUCostNVMLReady").get("status") == "True",
    )
    agent.stop()
    fake.state["initError"] = "DRIVER_NOT_LOADED"
    fake.save()
    agent.start()
    down = cluster.wait(
        "NVML unavailable on the node",
        lambda: (
            (n := cluster.get("node", node))
            and condition(n, "GPUCostNVMLReady").get("reason") == "NVMLUnavailable"
            and n
        ),
    )
    assert condition(down, "GPUCostNVMLReady")["message"] == "NVML unavailable: Driver Not Loaded"
    fake.state.pop("initError")
    fake.save()
    cluster.wait(
        "NVML back",
        lambda: condition(cluster.get("node", node), "GPUCostNVMLReady").get("status") == "True",
    )
