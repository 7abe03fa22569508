"""The node agent's /metrics (prometheus-client), one series set per node; names in README ("Node
agent").

Labelled by ``node`` and ``gpu`` (index) like DCGM exporter's ``Hostname``/``gpu``, so the
operator's utilization query works against the agent with GPUCOST_UTILIZATION_QUERY set to
``max by (node) (max_over_time(gpucost_agent_gpu_utilization_percent[{window}]))`` and
GPUCOST_UTILIZATION_NODE_LABEL=node.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from gpucost.adapters.metrics import remove_series

GPU = ["node", "gpu", "uuid"]
POD = ["node", "gpu", "namespace", "pod"]

utilization = Gauge("gpucost_agent_gpu_utilization_percent", "GPU utilization (NVML)", GPU)
memory_used = Gauge("gpucost_agent_gpu_memory_used_mib", "GPU memory in use (NVML)", GPU)
memory_total = Gauge("gpucost_agent_gpu_memory_total_mib", "GPU memory (NVML)", GPU)
healthy = Gauge(
    "gpucost_agent_gpu_healthy", "1 while the GPU answers NVML and had no fatal Xid", GPU
)
pod_used = Gauge("gpucost_agent_pod_gpu_memory_used_mib", "GPU memory a pod's processes hold", POD)
pod_slice = Gauge("gpucost_agent_pod_gpu_memory_slice_mib", "GPU memory a pod was placed with", POD)
pod_limit = Gauge(
    "gpucost_agent_pod_gpu_memory_limit_mib", "NVML hard limit set on the pod's cgroup", POD
)
violations = Counter(
    "gpucost_agent_slice_violations_total", "Ticks a pod held more than its slice", ["node"]
)
evictions = Counter(
    "gpucost_agent_evictions_total", "Pods evicted for holding more than their slice", ["node"]
)
nvml_errors = Gauge(
    "gpucost_agent_nvml_errors", "NVML calls that failed since the agent started", ["node"]
)
mode = Gauge(
    "gpucost_agent_isolation_mode",
    "1 for the isolation mode running (and the one requested)",
    ["node", "mode", "requested"],
)


def forget_pod(node: str, gpu: int, namespace: str, pod: str) -> None:
    remove_series((pod_used, pod_slice, pod_limit), node, str(gpu), namespace, pod)
