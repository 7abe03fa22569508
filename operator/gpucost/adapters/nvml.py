"""NVML through nvidia-ml-py's function surface: the real ``pynvml`` module, or the in-memory
``devcluster.fakenvml.FakeNVML`` on machines without a GPU. Errors become values here, so one
lost GPU or a process that exits mid-listing never stops the agent's loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pynvml
from pynvml import NVMLError

log = logging.getLogger(__name__)
MIB = 1024 * 1024
# Xids that mean the GPU can't be trusted until it is reset or the node replaced (NVIDIA's Xid
# catalogue): 48 double-bit ECC, 63/64 row remapping, 74 NVLink, 79 fallen off the bus,
# 92/94/95 ECC, 119/120 GSP, 140 unrecovered ECC.
FATAL_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})


@dataclass(frozen=True)
class GPUReading:
    index: int
    uuid: str = ""
    model: str = ""
    memory_mib: int = 0
    used_mib: int = 0
    utilization: int = 0
    mig: bool = False
    error: str | None = None
    """Why this GPU could not be read (GPU_IS_LOST …); the GPU is then unhealthy."""


@dataclass(frozen=True)
class Process:
    pid: int
    used_mib: int


def product_label(name: str) -> str:
    """NVML's "NVIDIA A100-SXM4-80GB" as GPU feature discovery labels it: NVIDIA-A100-SXM4-80GB."""
    return "-".join(name.split())


class NVML:
    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.ready = False
        self.driver = ""
        self.errors = 0
        """NVML calls that failed, for the agent's metrics."""
        self._events: Any = None

    def start(self) -> str | None:
        """Initialise (again); None when NVML answers, else why not (the agent retries next
        tick)."""
        try:
            self.lib.nvmlInit()
            self.driver = str(self.lib.nvmlSystemGetDriverVersion())
        except NVMLError as e:
            self.errors += 1
            self.ready = False
            return f"NVML unavailable: {e}"
        self.ready = True
        self._events = None
        return None

    def gpus(self) -> list[GPUReading]:
        out = []
        for index in range(self.lib.nvmlDeviceGetCount()):
            try:
                handle = self.lib.nvmlDeviceGetHandleByIndex(index)
                memory = self.lib.nvmlDeviceGetMemoryInfo(handle)
                mig = self.lib.nvmlDeviceGetMigMode(handle)[0] == 1
                out.append(
                    GPUReading(
                        index=index,
                        uuid=str(self.lib.nvmlDeviceGetUUID(handle)),
                        model=product_label(str(self.lib.nvmlDeviceGetName(handle))),
                        memory_mib=int(memory.total // MIB),
                        used_mib=int(memory.used // MIB),
                        utilization=int(self.lib.nvmlDeviceGetUtilizationRates(handle).gpu),
                        mig=mig,
                    )
                )
            except NVMLError as e:
                self.errors += 1
                out.append(GPUReading(index=index, error=str(e)))
        return out

    def processes(self, index: int) -> list[Process]:
        """Compute processes on one GPU; [] when it can't be read (its GPUReading says why)."""
        try:
            handle = self.lib.nvmlDeviceGetHandleByIndex(index)
            procs = self.lib.nvmlDeviceGetComputeRunningProcesses(handle)
        except NVMLError:
            self.errors += 1
            return []
        return [Process(int(p.pid), int((p.usedGpuMemory or 0) // MIB)) for p in procs]

    def set_memory_limit(
        self, index: int, namespace: str, soft_mib: int, hard_mib: int
    ) -> str | None:
        """The driver's per-cgroup limit (R615+); None when set, else why not."""
        limits = pynvml.c_nvmlSetMemoryLimits_v1_t()
        limits.nameSpace = namespace.encode()
        limits.softLimit, limits.hardLimit = soft_mib * MIB, hard_mib * MIB
        try:
            self.lib.nvmlDeviceSetMemoryLimits_v1(
                self.lib.nvmlDeviceGetHandleByIndex(index), limits
            )
        except NVMLError as e:
            self.errors += 1
            return str(e)
        except AttributeError:
            return "nvidia-ml-py has no nvmlDeviceSetMemoryLimits_v1"
        return None

    def memory_limits_supported(self) -> str | None:
        """None when the driver keeps per-cgroup limits, else why not. Asks for the limits of a
        namespace nobody has: NOT_FOUND means the call exists and works."""
        limits = pynvml.c_nvmlGetMemoryLimits_v1_t()
        limits.nameSpace = b"/gpucost-probe"
        try:
            self.lib.nvmlDeviceGetMemoryLimits_v1(self.lib.nvmlDeviceGetHandleByIndex(0), limits)
        except pynvml.NVMLError_NotFound:
            return None
        except NVMLError as e:
            return str(e)
        except AttributeError:
            return "nvidia-ml-py has no nvmlDeviceGetMemoryLimits_v1"
        return None

    def clear_memory_limit(self, index: int, namespace: str) -> str | None:
        unlimited = pynvml.NVML_DEVICE_MEMORY_LIMIT_MAX // MIB
        return self.set_memory_limit(index, namespace, unlimited, unlimited)

    def fatal_xids(self, gpu_count: int) -> list[tuple[int, int]]:
        """(GPU index, Xid) of critical Xid events since the last call, without waiting."""
        out: list[tuple[int, int]] = []
        try:
            if self._events is None:
                self._events = self.lib.nvmlEventSetCreate()
                for index in range(gpu_count):
                    try:
                        handle = self.lib.nvmlDeviceGetHandleByIndex(index)
                        self.lib.nvmlDeviceRegisterEvents(
                            handle, pynvml.nvmlEventTypeXidCriticalError, self._events
                        )
                    except NVMLError:
                        self.errors += 1  # a lost GPU reports no events; its reading says so
            while True:
                event = self.lib.nvmlEventSetWait_v2(self._events, 0)
                if (
                    event.eventType == pynvml.nvmlEventTypeXidCriticalError
                    and event.eventData in FATAL_XIDS
                ):
                    index = self._index_of(event.device)
                    if index >= 0:  # a GPU too far gone to name is already unhealthy by its reading
                        out.append((index, int(event.eventData)))
        except NVMLError as e:
            if not isinstance(e, pynvml.NVMLError_Timeout):
                self.errors += 1
        return out

    def _index_of(self, handle: Any) -> int:
        try:
            return int(self.lib.nvmlDeviceGetIndex(handle))
        except NVMLError:
            self.errors += 1
            return -1
