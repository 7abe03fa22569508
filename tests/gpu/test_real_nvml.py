"""The agent's real NVML path, on a machine with an NVIDIA GPU: `scripts/test-gpu.sh`.

Without a GPU (or driver) every test here is skipped and pytest reports it as skipped; this folder
is outside `scripts/test.sh`'s test paths so a skip never stands in the main suite. What ran is
written to $GPUCOST_GPU_RESULTS (default gpu-results.json) for the closing note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from gpucost.adapters.nvml import NVML
from gpucost.core.isolation import Slice, over_slice, usage_by_pod

RESULTS: dict[str, object] = {}
# A CUDA process: allocate N MiB on GPU 0 when told to on stdin, report the total or the error.
WORKER = """
import sys, torch
held = []
print("ready", flush=True)
for line in sys.stdin:
    try:
        held.append(torch.empty(int(line) * 2**20, dtype=torch.uint8, device="cuda:0"))
        print("ok", sum(t.numel() for t in held) // 2**20, flush=True)
    except RuntimeError as e:
        print("refused", str(e).splitlines()[0], flush=True)
"""


@pytest.fixture(scope="module")
def nvml():
    lib = NVML(pynvml)
    error = lib.start()
    if error:
        pytest.skip(f"no NVIDIA GPU here: {error}")
    RESULTS["driver"] = lib.driver
    yield lib
    Path(os.environ.get("GPUCOST_GPU_RESULTS", "gpu-results.json")).write_text(
        json.dumps(RESULTS, indent=1)
    )


@pytest.fixture
def worker():
    pytest.importorskip("torch")
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"

    def ask(mib: int) -> str:
        proc.stdin.write(f"{mib}\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    yield proc, ask
    proc.kill()
    proc.wait()


def test_discovery_reads_every_gpu(nvml):
    gpus = nvml.gpus()
    RESULTS["gpus"] = [
        {"index": g.index, "model": g.model, "memoryMiB": g.memory_mib, "mig": g.mig} for g in gpus
    ]
    assert gpus and all(
        g.error is None and g.memory_mib > 0 and g.uuid.startswith(("GPU-", "MIG-")) for g in gpus
    )


def test_a_process_over_its_slice_is_stopped_by_the_mode_the_driver_supports(nvml, worker):
    proc, ask = worker
    assert ask(1024).startswith("ok")
    seen = [p for p in nvml.processes(0) if p.pid == proc.pid]
    RESULTS["process_seen_mib"] = seen[0].used_mib if seen else None
    unsupported = nvml.memory_limits_supported()
    RESULTS["nvml_limit"] = "supported" if unsupported is None else unsupported
    if unsupported is None:
        cgroup = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()[-1].split(":", 2)[-1]
        assert nvml.set_memory_limit(0, cgroup, 1536, 2048) is None
        answer = ask(2048)  # 3 GiB in all, over the 2 GiB hard limit
        RESULTS["nvml_limit_answer"] = answer
        assert answer.startswith("refused")
    else:
        # watch-evict: the process, seen through NVML, is over a 512 MiB slice and past a zero
        # grace.
        assert seen and seen[0].used_mib >= 1024
        used = usage_by_pod(
            {0: [(p.pid, p.used_mib) for p in nvml.processes(0)]}, {proc.pid: "pod"}
        )
        _, _, evict = over_slice(
            [Slice("pod", "ns", "worker", 0, 512)], used, {}, now=0.0, grace=0.0
        )
        assert [v.slice.name for v in evict] == ["worker"]
        proc.kill()
        RESULTS["watch_evict"] = f"evicted at {evict[0].used_mib} MiB of a 512 MiB slice"
