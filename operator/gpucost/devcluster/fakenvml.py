"""An in-memory NVML with nvidia-ml-py's function surface, for machines without an NVIDIA GPU.

The agent calls NVML only through the names below, with pynvml's signatures, return shapes and
errors (``pynvml.NVMLError`` subclasses by code), so the same agent code runs on this and on the
real library; ``tests/unit/test_fakenvml.py`` checks the signatures against pynvml's.

The state is a JSON file the tests rewrite while an agent runs (reloaded when it changes):

    {"driver": "580.65.06", "initError": null, "memoryLimits": true,
     "gpus": [{"uuid": "GPU-…", "name": "NVIDIA A100-SXM4-80GB", "memoryMiB": 81920,
               "utilization": 35, "lost": false, "mig": false,
               "processes": [{"pid": 4242, "usedMiB": 30000}]}],
     "xids": [{"gpu": 0, "xid": 79}]}

``initError`` is an NVML error name (e.g. "LIBRARY_NOT_FOUND") that nvmlInit raises; a ``lost``
GPU raises GPU_IS_LOST from every per-device call, as a GPU that fell off the bus does; ``xids``
are delivered once each through the event set; ``memoryLimits: false`` is a driver before R615.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
from pynvml import NVMLError

MIB = 1024 * 1024


@dataclass(frozen=True)
class _Handle:
    index: int


class FakeNVML:
    def __init__(self, state: Path) -> None:
        self.path = state
        self._mtime = -1.0
        self._state: dict[str, Any] = {}
        self._initialised = False
        self._delivered = 0
        self.limits: dict[tuple[int, str], tuple[int, int]] = {}
        """(gpu index, cgroup namespace) → (soft, hard) bytes, as set through
        nvmlDeviceSetMemoryLimits_v1."""

    def _load(self) -> dict[str, Any]:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self._state, self._mtime = json.loads(self.path.read_text()), mtime
        return self._state

    def _gpu(self, handle: _Handle) -> dict[str, Any]:
        if not self._initialised:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        gpus = self._load()["gpus"]
        if not 0 <= handle.index < len(gpus):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = gpus[handle.index]
        if gpu.get("lost"):
            raise NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    # Library lifecycle and system queries.
    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        error = self._load().get("initError")
        if error:
            raise NVMLError(getattr(pynvml, f"NVML_ERROR_{error}"))
        self._initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self._initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        if not self._initialised:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return str(self._load()["driver"])

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        if not self._initialised:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return len(self._load()["gpus"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:  # noqa: N802
        handle = _Handle(index)
        self._gpu(handle)
        return handle

    # Per-device queries.
    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:  # noqa: N802
        self._gpu(handle)
        return handle.index

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:  # noqa: N802
        return str(self._gpu(handle)["uuid"])

    def nvmlDeviceGetName(self, handle: _Handle) -> str:  # noqa: N802
        return str(self._gpu(handle)["name"])

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Any = None) -> SimpleNamespace:  # noqa: N802
        gpu = self._gpu(handle)
        total = int(gpu["memoryMiB"]) * MIB
        used = sum(int(p["usedMiB"]) for p in gpu.get("processes", [])) * MIB
        return SimpleNamespace(total=total, used=used, free=max(total - used, 0))

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> SimpleNamespace:  # noqa: N802
        gpu = self._gpu(handle)
        return SimpleNamespace(gpu=int(gpu.get("utilization", 0)), memory=0)

    def nvmlDeviceGetMigMode(self, device: _Handle) -> list[int]:  # noqa: N802
        mode = int(bool(self._gpu(device).get("mig")))
        return [mode, mode]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[SimpleNamespace]:  # noqa: N802
        return [
            SimpleNamespace(
                pid=int(p["pid"]),
                usedGpuMemory=int(p["usedMiB"]) * MIB,
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )
            for p in self._gpu(handle).get("processes", [])
        ]

    # Per-cgroup memory limits (driver R615+).
    def nvmlDeviceSetMemoryLimits_v1(self, device: _Handle, limits: Any) -> None:  # noqa: N802
        self._gpu(device)
        if not self._load().get("memoryLimits", True):
            raise NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if limits.softLimit > limits.hardLimit:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.limits[(device.index, limits.nameSpace)] = (limits.softLimit, limits.hardLimit)

    def nvmlDeviceGetMemoryLimits_v1(self, device: _Handle, limits: Any) -> None:  # noqa: N802
        self._gpu(device)
        if not self._load().get("memoryLimits", True):
            raise NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if (device.index, limits.nameSpace) not in self.limits:
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        limits.softLimit, limits.hardLimit = self.limits[(device.index, limits.nameSpace)]
        limits.currentUsed = 0

    # Xid errors through an event set.
    def nvmlEventSetCreate(self) -> object:  # noqa: N802
        return object()

    def nvmlDeviceRegisterEvents(self, handle: _Handle, eventTypes: int, eventSet: object) -> None:  # noqa: N802,N803
        self._gpu(handle)

    def nvmlEventSetWait_v2(self, eventSet: object, timeoutms: int) -> SimpleNamespace:  # noqa: N802,N803
        xids = self._load().get("xids", [])
        if self._delivered >= len(xids):
            raise NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        event = xids[self._delivered]
        self._delivered += 1
        return SimpleNamespace(
            device=_Handle(int(event["gpu"])),
            eventType=pynvml.nvmlEventTypeXidCriticalError,
            eventData=int(event["xid"]),
            gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF,
        )
