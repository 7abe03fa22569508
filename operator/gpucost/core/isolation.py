"""Node agent decisions, no I/O: which isolation mode runs, which process belongs to which pod,
and which pod has held more than its slice for longer than the grace period.

Fallbacks: ``nvml-limit`` needs the driver's per-cgroup limits (R615+) and ``mps`` a running MPS
control daemon; either falls back to ``watch-evict``, which any driver can do (MPS limits are set
in a pod's environment at creation, so MPS is no fallback for pods that already run).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

NVML_LIMIT, MPS, WATCH_EVICT, NONE = "nvml-limit", "mps", "watch-evict", "none"

# The pod segment of a kubelet cgroup path, for both cgroup drivers:
#   systemd:  …/kubepods-burstable-pod1f2e…_9a8b….slice/cri-containerd-….scope
#   cgroupfs: …/kubepods/burstable/pod1f2e…-9a8b…/<container id>
_POD = re.compile(
    r"^(.*?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?)(?:/|$)"
)


@dataclass(frozen=True)
class Mode:
    requested: str
    running: str
    reason: str
    """Why ``running`` differs from ``requested`` (empty when it doesn't)."""


def choose_mode(requested: str, memory_limits: str | None, mps_daemon: bool) -> Mode:
    """``memory_limits`` is None when the driver took a limit, else its error."""
    if requested == NVML_LIMIT and memory_limits is not None:
        return Mode(
            requested, WATCH_EVICT, f"the driver cannot limit memory per cgroup ({memory_limits})"
        )
    if requested == MPS and not mps_daemon:
        return Mode(requested, WATCH_EVICT, "no MPS control daemon on the node")
    return Mode(requested, requested, "")


def pod_cgroup(cgroup_file: str) -> tuple[str, str] | None:
    """(pod UID, the pod's cgroup path) from a /proc/<pid>/cgroup; None for a process outside
    pods."""
    for line in cgroup_file.splitlines():
        path = line.split(":", 2)[-1]
        match = _POD.match(path)
        if match:
            return match.group(2).replace("_", "-"), match.group(1)
    return None


@dataclass(frozen=True)
class Slice:
    """GPU memory one of our pods may hold on one GPU of this node."""

    pod_uid: str
    namespace: str
    name: str
    gpu_index: int
    limit_mib: int


@dataclass(frozen=True)
class Violation:
    slice: Slice
    used_mib: int
    seconds: float


def usage_by_pod(
    processes: dict[int, list[tuple[int, int]]], pod_of_pid: dict[int, str]
) -> dict[tuple[str, int], int]:
    """(pod UID, GPU index) → MiB, from each GPU's (pid, MiB) list; processes of no pod are left
    out."""
    used: dict[tuple[str, int], int] = defaultdict(int)
    for gpu, procs in processes.items():
        for pid, mib in procs:
            uid = pod_of_pid.get(pid)
            if uid is not None:
                used[(uid, gpu)] += mib
    return dict(used)


def over_slice(
    slices: list[Slice],
    used: dict[tuple[str, int], int],
    since: dict[tuple[str, int], float],
    now: float,
    grace: float,
) -> tuple[dict[tuple[str, int], float], list[Violation], list[Violation]]:
    """When each over-slice (pod, GPU) started, the violations seen now, and those past the grace
    period (to evict). Only pods in ``slices`` — ours — can ever be named."""
    started: dict[tuple[str, int], float] = {}
    now_over: list[Violation] = []
    evict: list[Violation] = []
    for s in slices:
        key = (s.pod_uid, s.gpu_index)
        mib = used.get(key, 0)
        if mib <= s.limit_mib:
            continue
        started[key] = since.get(key, now)
        violation = Violation(s, mib, now - started[key])
        now_over.append(violation)
        if violation.seconds >= grace:
            evict.append(violation)
    return started, now_over, evict
