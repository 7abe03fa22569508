"""Where the control-plane binaries live, and a clear failure when they are not there yet."""

from __future__ import annotations

import os
from pathlib import Path

# Must match K8S_VERSION in scripts/build-control-plane.sh (a unit test checks).
K8S_VERSION = "v1.34.4"
REQUIRED = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwokctl",
    "kubectl",
    "helm",
)


class ToolsMissing(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("GPUCOST_CACHE", Path.home() / ".cache" / "gpu-cost-operator"))


def bin_dir() -> Path:
    return Path(os.environ.get("GPUCOST_BIN", cache_root() / K8S_VERSION / "bin"))


def require() -> Path:
    """The binary folder, or ToolsMissing naming what to run."""
    folder = bin_dir()
    missing = [b for b in REQUIRED if not os.access(folder / b, os.X_OK)]
    for data in (
        "kwok-stages/node-initialize.yaml",
        "capi-crds/cluster.x-k8s.io_machinedeployments.yaml",
    ):
        if not (folder / data).exists():
            missing.append(data.split("/")[0] + "/")
    if missing:
        raise ToolsMissing(
            f"missing {', '.join(missing)} in {folder}. Run scripts/setup.sh: it builds the "
            "control "
            "plane from Go modules (about 5 minutes cold on 2 cores) and unpacks kubectl and helm."
        )
    return folder


def capi_crds() -> Path:
    """Cluster API's own CRDs (from the sigs.k8s.io/cluster-api module) for the clusterAPI
    provider."""
    return bin_dir() / "capi-crds"


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment with our binaries first on PATH (kwokctl looks kubectl up there)."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env
