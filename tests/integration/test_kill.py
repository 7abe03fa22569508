"""SIGKILL the operator at random moments while it scales up, consolidates and scales down.

What a kill at any instant must never do, checked on every look of a watcher beside the test:
over-commit a GPU, delete a node under a live workload pod, or move a cost total backwards. And
what must hold at the end of each phase: every replica Running, every idle node gone (and none
idle far past its timeout on any look). ``--kills N`` (default 30) sets how many kills the test
spreads over its three phases.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from typing import Any

import kubernetes
import pytest

from gpucost import names
from gpucost.api.common import epoch
from tests.integration.conftest import Cluster, condition
from tests.integration.test_autoscaler import node_names
from tests.integration.test_inferencepool import pool

IDLE_TIMEOUT_S = 15
IDLE_SLACK_S = 45
"""A node idle this much past its timeout was forgotten (a restart takes seconds, not this)."""


class Watcher(threading.Thread):
    """Looks at the cluster twice a second; every violation it sees is kept, with when."""

    def __init__(self, cluster: Cluster, namespace: str, pools: list[str]) -> None:
        super().__init__(daemon=True)
        client = kubernetes.config.new_client_from_config(config_file=str(cluster.cp.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.namespace, self.pools = namespace, pools
        self.violations: list[str] = []
        self.totals: dict[tuple[str, str], float] = {}
        self.looks = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            try:
                self.look()
            except kubernetes.client.exceptions.ApiException:
                continue  # the API was busy; the next look sees the same state or a later one
            self.looks += 1

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)

    def look(self) -> None:
        # Nodes before pods: a pod listed after its node is gone outlived the node.
        nodes = {n.metadata.name: n for n in self.core.list_node().items}
        pods = self.core.list_namespaced_pod(self.namespace).items
        used: dict[tuple[str, str], int] = defaultdict(int)
        for p in pods:
            ann = p.metadata.annotations or {}
            node = p.spec.node_name
            live = p.metadata.deletion_timestamp is None and p.status.phase in (
                "Pending",
                "Running",
            )
            if node and node not in nodes and live and p.status.phase == "Running":
                self.violations.append(f"node {node} deleted under Running pod {p.metadata.name}")
            if live and ann.get(names.ANNOTATION_GPU_INDICES):
                for i in ann[names.ANNOTATION_GPU_INDICES].split(","):
                    used[(ann[names.ANNOTATION_NODE], i)] += int(ann[names.ANNOTATION_GPU_MEMORY])
        for name, node in nodes.items():
            ann = node.metadata.annotations or {}
            since = epoch(ann.get(names.ANNOTATION_IDLE_SINCE))
            pool_name = (node.metadata.labels or {}).get(names.LABEL_NODEPOOL)
            if (
                pool_name in self.pools
                and since
                and time.time() - since > IDLE_TIMEOUT_S + IDLE_SLACK_S
            ):
                self.violations.append(f"node {name} idle since {since:.0f}, past its timeout")
        for (node, index), mib in used.items():
            capacity = _gpu_mib(nodes.get(node), int(index))
            if capacity is not None and mib > capacity:
                self.violations.append(f"GPU {index} of {node} over-committed: {mib}/{capacity}")
        for name in self.pools:
            obj = self.custom.get_cluster_custom_object(
                "gpucost.dev", "v1alpha1", "gpunodepools", name
            )
            for key in ("costAccumulated", "idleCostAccumulated"):
                value = float((obj.get("status") or {}).get(key) or 0.0)
                seen = self.totals.get((name, key), 0.0)
                if value < seen - 1e-9:
                    self.violations.append(f"{name} {key} went back from {seen} to {value}")
                self.totals[(name, key)] = max(seen, value)


def _gpu_mib(node: Any, index: int) -> int | None:
    if node is None:
        return None
    gpus = json.loads((node.metadata.annotations or {}).get(names.ANNOTATION_GPUS) or "[]")
    return next((int(g["memoryMiB"]) for g in gpus if int(g["index"]) == index), None)


class Killer:
    """SIGKILLs the operator after a random pause and starts it again at once."""

    def __init__(self, operator: Any, rng: random.Random) -> None:
        self.operator, self.rng, self.kills = operator, rng, 0

    def kill_for(self, seconds: float, kills: int) -> None:
        """``kills`` kills spread over about ``seconds``."""
        for _ in range(kills):
            time.sleep(self.rng.uniform(0.2, max(0.4, 2 * seconds / kills)))  # a random moment
            self.operator.kill()
            self.operator.start()
            self.kills += 1


def scale(cluster: Cluster, namespace: str, name: str, replicas: int) -> None:
    patch = f'{{"spec":{{"replicas":{replicas}}}}}'
    cluster.kubectl(
        "patch", "inferencepools.gpucost.dev", name, "-n", namespace, "--type=merge", "-p", patch
    )


def replicas_running(cluster: Cluster, namespace: str, want: dict[str, int]) -> bool:
    pods = cluster.list("pods", namespace)
    for name, n in want.items():
        mine = [
            p
            for p in pods
            if p["metadata"]["name"].startswith(f"{name}-")
            and p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        ]
        obj = cluster.get("inferencepools.gpucost.dev", name, namespace)
        if len(mine) != n or condition(obj, "Ready").get("status") != "True":
            return False
    return True


@pytest.mark.timeout(1200)
def test_sigkills_at_random_moments_lose_nothing_and_leave_nothing_paid_for(
    cluster, operator, namespace, gpu_pool, request
):
    kills = request.config.getoption("--kills")
    rng = random.Random(kills)
    common = {
        "minNodes": 0,
        "idleTimeout": f"{IDLE_TIMEOUT_S}s",
        "consolidateAfter": "3s",
        "provider": {"kind": "kwok", "bootDelay": "1s"},
    }
    big = gpu_pool(0, gpus=8, memory_mib=81920, pricePerHour=8.0, maxNodes=4, **common)
    small = gpu_pool(0, gpus=1, memory_mib=24000, pricePerHour=1.0, maxNodes=12, **common)
    watcher = Watcher(cluster, namespace, [big, small])
    watcher.start()
    killer = Killer(operator, rng)
    per_phase = [kills // 3 + (1 if i < kills % 3 else 0) for i in range(3)]
    try:
        # Scale-up: slices and whole GPUs, some only the 8-GPU pool can hold.
        want = {"slices": 10, "pairs": 3}
        cluster.apply(pool("slices", namespace, want["slices"], gpu={"memoryMiB": 20000}))
        cluster.apply(pool("pairs", namespace, want["pairs"], gpu={"gpus": 2}))
        killer.kill_for(20, per_phase[0])
        cluster.wait(
            "every replica Running after the scale-up kills",
            lambda: replicas_running(cluster, namespace, want),
            timeout=240,
        )

        # Consolidation: the pairs go and most slices too; the three slices left cost less on
        # small nodes than the 8-GPU node does, so it is replaced while the operator keeps dying.
        cluster.kubectl("delete", "inferencepools.gpucost.dev", "pairs", "-n", namespace)
        scale(cluster, namespace, "slices", 3)
        want = {"slices": 3}
        killer.kill_for(20, per_phase[1])
        cluster.wait(
            "the 8-GPU node consolidated away, every slice Running",
            lambda: not node_names(cluster, big) and replicas_running(cluster, namespace, want),
            timeout=300,
        )

        # Scale-down: no replica left; every node goes within its idle timeout.
        cluster.kubectl(
            "patch",
            "inferencepools.gpucost.dev",
            "slices",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"replicas":0}}',
        )
        killer.kill_for(15, per_phase[2])
        cluster.wait(
            "every node removed once idle",
            lambda: not node_names(cluster, small) and not node_names(cluster, big),
            timeout=IDLE_TIMEOUT_S + 180,
        )
    finally:
        watcher.stop()
    assert killer.kills == kills
    assert watcher.looks > 20, "the watcher hardly looked: its checks prove nothing"
    assert not watcher.violations, watcher.violations[:10]
    assert watcher.totals[(big, "costAccumulated")] > 0  # the totals it watched did move
