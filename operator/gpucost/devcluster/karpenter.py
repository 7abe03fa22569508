"""Real Karpenter (v1.15, its KWOK cloud provider, built by scripts/build-control-plane.sh) beside
the test control plane, for the karpenter node provider.

Karpenter runs as a plain process against the cluster's kubeconfig. Its instance types are real
AWS GPU instance types with their published prices (``../shared/data/prices``), each also
advertising ``gpucost.dev/gpu-memory`` as the node agent does on a real GPU node. A KWOKNodeClass's
``nodeRegistrationDelay`` stands in for instance boot time.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucost import names
from gpucost.devcluster.binaries import ToolsMissing, bin_dir, tool_env
from gpucost.devcluster.controlplane import ControlPlane, free_port, poll, stop_process

PRICES = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "prices"
REGION = "us-east-1"
ZONE = "us-east-1a"
GPU_MIB = {"NVIDIA A10G": 23028, "NVIDIA L4": 23034, "NVIDIA T4": 15360}
"""Usable MiB per GPU as nvidia-smi reports it (the price list gives marketing GiB)."""


def instance_types(wanted: tuple[str, ...], prices: Path = PRICES) -> list[dict[str, Any]]:
    """Karpenter KWOK instance types for ``wanted``, as its instance-types JSON spells them: one
    on-demand offering and, where AWS sells it, one spot offering at the snapshot's average."""
    rows = {
        r["instance_type"]: r
        for r in csv.DictReader((prices / "aws_ec2_gpu_linux_ondemand_spot.csv").open())
        if r["region"] == REGION and r["instance_type"] in wanted
    }
    missing = set(wanted) - set(rows)
    if missing:
        raise ValueError(f"no {REGION} price for {sorted(missing)} in {prices}")
    out = []
    for name in wanted:
        r = rows[name]
        gpus = int(r["gpu_count"])
        per_gpu = GPU_MIB.get(r["gpu_model"], int(float(r["gpu_memory_gib_total"]) * 1024) // gpus)
        offerings = [
            {"capacityType": "on-demand", "zone": ZONE, "price": float(r["ondemand_usd_hr"])}
        ]
        if r["spot_avg_usd_hr"]:
            offerings.append(
                {"capacityType": "spot", "zone": ZONE, "price": float(r["spot_avg_usd_hr"])}
            )
        out.append(
            {
                "name": name,
                "offerings": offerings,
                "architecture": "amd64",
                "operatingSystems": ["linux"],
                "resources": {
                    "cpu": r["vcpu"],
                    "memory": f"{int(float(r['memory_gib']))}Gi",
                    "ephemeral-storage": "200Gi",
                    "pods": "110",
                    names.RESOURCE_GPU: str(gpus),
                    names.RESOURCE_GPU_MEMORY: str(gpus * per_gpu),
                },
            }
        )
    return out


def node_class(name: str, boot_delay: str = "0s") -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.kwok.sh/v1alpha1",
        "kind": "KWOKNodeClass",
        "metadata": {"name": name},
        "spec": {"nodeRegistrationDelay": boot_delay} if boot_delay != "0s" else {},
    }


def node_pool(name: str, node_class_name: str) -> dict[str, Any]:
    """A NodePool as a platform team has one: GPU nodes, spot and on-demand, Karpenter's own
    consolidation on (gpucost's nodes opt out of it with do-not-disrupt)."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"team": "ml-platform"}},
                "spec": {
                    "nodeClassRef": {
                        "group": "karpenter.kwok.sh",
                        "kind": "KWOKNodeClass",
                        "name": node_class_name,
                    },
                    "requirements": [
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                        {
                            "key": "karpenter.sh/capacity-type",
                            "operator": "In",
                            "values": ["spot", "on-demand"],
                        },
                    ],
                    "expireAfter": "720h",
                },
            },
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": "1s",
            },
        },
    }


@dataclass
class Karpenter:
    """One Karpenter process for one control plane; its CRDs are installed on start."""

    cp: ControlPlane
    workdir: Path
    types: tuple[str, ...] = ("g5.xlarge", "g6.xlarge", "g5.12xlarge")
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    metrics_port: int = field(default_factory=free_port)

    @property
    def log(self) -> Path:
        return self.workdir / "karpenter.log"

    def start(self, timeout: float = 60) -> "Karpenter":
        binary = bin_dir() / "karpenter-kwok"
        crds = bin_dir() / "karpenter-crds"
        if not os.access(binary, os.X_OK) or not crds.is_dir():
            raise ToolsMissing(f"{binary} or {crds} is missing: run scripts/setup.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.kubectl("apply", "--server-side", "-f", str(crds))
        self.cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        types = self.workdir / "instance-types.json"
        types.write_text(json.dumps(instance_types(self.types), indent=1))
        health = free_port()
        env = tool_env(
            {
                "KUBECONFIG": str(self.cp.kubeconfig),
                "SYSTEM_NAMESPACE": "kube-system",
                "DISABLE_LEADER_ELECTION": "true",
                "METRICS_PORT": str(self.metrics_port),
                "HEALTH_PROBE_PORT": str(health),
                "INSTANCE_TYPES_FILE_PATH": str(types),
                "LOG_LEVEL": "info",
            }
        )
        self.proc = subprocess.Popen(
            [str(binary)], env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"karpenter exited; see {self.log}:\n{self.tail()}")
            return b"Starting workers" in self.log.read_bytes()

        poll("karpenter's controllers started", ready, timeout)
        return self

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
