"""``gpucost agent``: one per GPU node (a DaemonSet). Publishes what NVML sees on the Node, enforces
memory slices the way the pool and the driver allow, and reports usage on /metrics.

Nothing here stops the loop: NVML missing, a lost GPU, an API error or a process that exits
between listing and lookup is a condition, an Event or a metric, and the next tick tries again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from gpucost import names
from gpucost.adapters import agent_metrics as m
from gpucost.adapters.kube import Kube
from gpucost.adapters.nvml import NVML, GPUReading
from gpucost.api.common import condition
from gpucost.core import isolation, snapshot
from gpucost.core.isolation import Slice

log = logging.getLogger(__name__)
COMPONENT = "gpucost-agent"
# Node conditions the agent owns.
COND_NVML, COND_HEALTHY, COND_ISOLATION = (
    "GPUCostNVMLReady",
    "GPUCostGPUsHealthy",
    "GPUCostIsolation",
)
Condition = tuple[str, bool, str, str]
"""(type, ok, reason, message) of one Node condition the agent owns."""


@dataclass(frozen=True)
class AgentSettings:
    node: str
    interval_seconds: float = 5.0
    grace_seconds: float = 30.0
    """How long a pod may hold more than its slice before watch-evict evicts it."""
    soft_limit_fraction: float = 0.9
    """nvml-limit: the soft limit as a fraction of the slice (the hard limit is the slice)."""
    proc_root: Path = Path("/proc")
    mps_pipe_dir: Path = Path("/tmp/nvidia-mps")


@dataclass
class Agent:
    kube: Kube
    nvml: NVML
    settings: AgentSettings
    bad: dict[int, str] = field(default_factory=dict)
    """GPU index → why it is unhealthy until the agent restarts (a fatal Xid)."""
    over_since: dict[tuple[str, int], float] = field(default_factory=dict)
    limited: dict[tuple[str, int], str] = field(default_factory=dict)
    """(pod UID, GPU) → the cgroup whose NVML limit this agent set."""
    cgroups: dict[str, str] = field(default_factory=dict)
    """pod UID → its cgroup path, found in /proc."""
    slices: dict[tuple[str, int], Slice] = field(default_factory=dict)
    known: dict[int, GPUReading] = field(default_factory=dict)
    """The last good reading of each GPU: a lost GPU keeps its UUID, model and memory on the
    Node."""

    @property
    def node_name(self) -> str:
        return self.settings.node

    def tick(self, now: float) -> None:
        node = self.kube.get_node(self.node_name)
        if node is None:
            log.warning("node %s not found; waiting for it", self.node_name)
            return
        if not self.nvml.ready:
            error = self.nvml.start()
            if error:
                self._conditions(node, [(COND_NVML, False, "NVMLUnavailable", error)])
                m.nvml_errors.labels(self.node_name).set(self.nvml.errors)
                return
        readings = [
            replace(self.known[r.index], error=r.error) if r.error and r.index in self.known else r
            for r in self.nvml.gpus()
        ]
        self.known.update({r.index: r for r in readings if r.error is None})
        for index, xid in self.nvml.fatal_xids(len(readings)):
            self.bad[index] = f"Xid {xid}"
        conditions = self._publish(node, readings)
        healthy = [r for r in readings if r.error is None and r.index not in self.bad]
        conditions.append(self._isolate(node, healthy, now))
        self._conditions(node, conditions)  # one status write a tick, all conditions together
        m.nvml_errors.labels(self.node_name).set(self.nvml.errors)

    # What the node has.
    def _publish(self, node: dict[str, Any], readings: list[GPUReading]) -> list[Condition]:
        gpus = [
            {
                "index": r.index,
                "uuid": r.uuid,
                "model": r.model,
                "memoryMiB": r.memory_mib,
                **({"mig": True} if r.mig else {}),
                **(
                    {"healthy": False, "reason": r.error or self.bad[r.index]}
                    if r.error or r.index in self.bad
                    else {}
                ),
            }
            for r in readings
        ]
        known = [r for r in readings if r.error is None]
        labels = {}
        if known:
            labels = {
                names.LABEL_GPU_PRODUCT: known[0].model,
                names.LABEL_GPU_MEMORY: str(known[0].memory_mib),
                names.LABEL_GPU_COUNT: str(len(readings)),
                names.LABEL_DRIVER_VERSION: self.nvml.driver,
            }
        meta = node["metadata"]
        annotation = json.dumps(gpus, separators=(",", ":"))
        if (
            any((meta.get("labels") or {}).get(k) != v for k, v in labels.items())
            or (meta.get("annotations") or {}).get(names.ANNOTATION_GPUS) != annotation
        ):
            self.kube.patch_node(
                self.node_name,
                {
                    "metadata": {
                        "labels": labels,
                        "annotations": {names.ANNOTATION_GPUS: annotation},
                    }
                },
            )
        healthy = [g for g in gpus if g.get("healthy", True)]
        capacity = {
            names.RESOURCE_GPU: str(len(healthy)),
            names.RESOURCE_GPU_MEMORY: str(sum(g["memoryMiB"] for g in healthy)),
        }
        status = node.get("status") or {}
        if any(
            (status.get(k) or {}).get(r) != v
            for k in ("capacity", "allocatable")
            for r, v in capacity.items()
        ):
            self.kube.patch_node_status(
                self.node_name, {"status": {"capacity": capacity, "allocatable": capacity}}
            )
        sick = [g for g in gpus if not g.get("healthy", True)]
        health = (
            COND_HEALTHY,
            not sick,
            "GPULost" if sick else "AllGPUsHealthy",
            "; ".join(f"GPU {g['index']}: {g['reason']}" for g in sick)
            or f"{len(gpus)} GPUs answer NVML",
        )
        for r in readings:
            labels_gpu = (self.node_name, str(r.index), r.uuid)
            m.healthy.labels(*labels_gpu).set(int(r.error is None and r.index not in self.bad))
            if r.error is None:
                m.utilization.labels(*labels_gpu).set(r.utilization)
                m.memory_used.labels(*labels_gpu).set(r.used_mib)
                m.memory_total.labels(*labels_gpu).set(r.memory_mib)
        return [
            (COND_NVML, True, "NVMLReady", f"driver {self.nvml.driver}, {len(readings)} GPUs"),
            health,
        ]

    def _conditions(self, node: dict[str, Any], wanted: list[Condition]) -> None:
        """Write the agent's Node conditions that changed."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        patch = []
        for type_, ok, reason, message in wanted:
            old = condition(node.get("status"), type_)
            status = "True" if ok else "False"
            if (old.get("status"), old.get("reason"), old.get("message")) == (
                status,
                reason,
                message,
            ):
                continue
            moved = old.get("status") != status
            patch.append(
                {
                    "type": type_,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now if moved else old.get("lastTransitionTime", now),
                }
            )
            # One Event per new reason, judged against the Node (so a restarted agent doesn't repeat
            # or miss one): a problem or a fallback is a Warning, a recovery Normal, a first good
            # state nothing.
            bad = not ok or reason.startswith("FallbackTo")
            if old.get("reason") != reason and (bad or old):
                self._event(node, "Warning" if bad else "Normal", reason, message)
        if patch:
            self.kube.patch_node_status(self.node_name, {"status": {"conditions": patch}})

    def _event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.kube.post_event(
                {"kind": obj.get("kind", "Node"), **obj}, type_, reason, message, COMPONENT
            )
        except ApiException as e:
            log.warning("could not post event %s: %s", reason, e.reason)
        log.info("%s: %s", reason, message)

    # Slices.
    def _requested_mode(self, node: dict[str, Any]) -> str:
        pool = (node["metadata"].get("labels") or {}).get(names.LABEL_NODEPOOL)
        obj = self.kube.get_object("gpunodepools", pool) if pool else None
        return str(((obj or {}).get("spec") or {}).get("isolation", isolation.NVML_LIMIT))

    def _our_slices(self, healthy: list[GPUReading]) -> dict[tuple[str, int], Slice]:
        out = {}
        usable = {r.index for r in healthy}
        for pod in self.kube.placed_pods(node=self.node_name):
            placed = snapshot.placed_pod(pod)
            if placed is None or placed.terminal:
                continue
            meta = pod["metadata"]
            for index in placed.gpu_indices:
                if index in usable:
                    out[(meta["uid"], index)] = Slice(
                        meta["uid"], meta["namespace"], meta["name"], index, placed.mib_per_gpu
                    )
        return out

    def _isolate(self, node: dict[str, Any], healthy: list[GPUReading], now: float) -> Condition:
        requested = self._requested_mode(node)
        slices = self._our_slices(healthy)
        for key in set(self.slices) - set(slices):
            gone = self.slices[key]
            m.forget_pod(self.node_name, gone.gpu_index, gone.namespace, gone.name)
        self.slices = slices
        processes = {
            r.index: [(p.pid, p.used_mib) for p in self.nvml.processes(r.index)] for r in healthy
        }
        pod_of_pid = self._pods_of(pid for procs in processes.values() for pid, _ in procs)
        used = isolation.usage_by_pod(processes, pod_of_pid)
        limit_error = self._limit(slices) if requested == isolation.NVML_LIMIT else None
        ours = {s.pod_uid for s in slices.values()}
        self.cgroups = {
            uid: path for uid, path in self.cgroups.items() if uid in ours
        }  # pods gone, or not ours
        mode = isolation.choose_mode(
            requested, limit_error, (self.settings.mps_pipe_dir / "control").exists()
        )
        m.mode.clear()
        m.mode.labels(self.node_name, mode.running, mode.requested).set(1)
        reason = "".join(part.capitalize() for part in mode.running.split("-"))
        self.over_since, over, evict = isolation.over_slice(
            list(slices.values()), used, self.over_since, now, self.settings.grace_seconds
        )
        for s in slices.values():
            labels = (self.node_name, str(s.gpu_index), s.namespace, s.name)
            m.pod_used.labels(*labels).set(used.get((s.pod_uid, s.gpu_index), 0))
            m.pod_slice.labels(*labels).set(s.limit_mib)
        if over:
            m.violations.labels(self.node_name).inc(len(over))
        if mode.running == isolation.WATCH_EVICT:
            for v in evict:
                self._evict(v)
        return (
            COND_ISOLATION,
            mode.running != isolation.NONE or requested == isolation.NONE,
            f"FallbackTo{reason}" if mode.reason else reason,
            f"{mode.running}: {mode.reason}" if mode.reason else f"{mode.running} as the pool asks",
        )

    def _pods_of(self, pids: Any) -> dict[int, str]:
        out = {}
        for pid in set(pids):
            try:
                found = isolation.pod_cgroup(
                    (self.settings.proc_root / str(pid) / "cgroup").read_text()
                )
            except OSError:
                continue  # the process exited after NVML listed it
            if found:
                out[pid] = found[0]
                self.cgroups[found[0]] = found[1]
        return out

    def _find_cgroups(self, uids: set[str]) -> None:
        """Pod cgroups for pods that have no GPU process yet (limits go on before the first
        allocation)."""
        for entry in self.settings.proc_root.iterdir():
            if not uids - set(self.cgroups):
                return
            if entry.name.isdigit():
                try:
                    found = isolation.pod_cgroup((entry / "cgroup").read_text())
                except OSError:
                    continue
                if found and found[0] in uids:
                    self.cgroups[found[0]] = found[1]

    def _limit(self, slices: dict[tuple[str, int], Slice]) -> str | None:
        """Set the NVML hard/soft limit on each slice's pod cgroup, clear it for pods gone; the
        first
        driver error (no R615, not supported) is returned and the agent falls back."""
        probe = self.nvml.memory_limits_supported()
        if probe is not None:
            return probe
        for key in [k for k in self.limited if k not in slices]:
            self.nvml.clear_memory_limit(key[1], self.limited.pop(key))
        self._find_cgroups({uid for uid, _ in slices} - set(self.cgroups))
        for key, s in slices.items():
            cgroup = self.cgroups.get(s.pod_uid)
            if cgroup is None or self.limited.get(key) == cgroup:
                continue
            error = self.nvml.set_memory_limit(
                s.gpu_index,
                cgroup,
                int(s.limit_mib * self.settings.soft_limit_fraction),
                s.limit_mib,
            )
            if error:
                return error
            self.limited[key] = cgroup
            m.pod_limit.labels(self.node_name, str(s.gpu_index), s.namespace, s.name).set(
                s.limit_mib
            )
        return None

    def _evict(self, v: isolation.Violation) -> None:
        s = v.slice
        message = (
            f"used {v.used_mib} MiB of its {s.limit_mib} MiB slice on GPU {s.gpu_index} of "
            f"{self.node_name} "
            f"for {v.seconds:.0f}s (grace {self.settings.grace_seconds:.0f}s): evicted"
        )
        try:
            if not self.kube.evict(s.namespace, s.name):
                log.warning(
                    "eviction of %s/%s refused by a PodDisruptionBudget; retrying",
                    s.namespace,
                    s.name,
                )
                return
        except ApiException as e:
            log.warning("eviction of %s/%s failed: %s", s.namespace, s.name, e.reason)
            return
        m.evictions.labels(self.node_name).inc()
        self.over_since.pop((s.pod_uid, s.gpu_index), None)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": s.name, "namespace": s.namespace, "uid": s.pod_uid},
        }
        self._event(pod, "Warning", "GPUMemoryOverSlice", message)


def run(agent: Agent, stop: threading.Event) -> None:
    log.info(
        "agent on node %s: every %.0fs, grace %.0fs",
        agent.node_name,
        agent.settings.interval_seconds,
        agent.settings.grace_seconds,
    )
    while not stop.is_set():
        try:
            agent.tick(time.time())
        except Exception:  # the next tick tries again; a DaemonSet pod must not crash-loop
            log.exception("agent tick failed")
        stop.wait(agent.settings.interval_seconds)
