"""Start and stop etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK.

kwokctl's binary runtime runs them as local processes on 127.0.0.1; this module adds the waits a
test needs (API ready, default service account present) and checks nothing is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from gpucost.devcluster import binaries


def poll(what: str, check, timeout: float, interval: float = 0.2):
    """Call ``check`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - the last error is reported on timeout
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last_error}" if last_error else ""))


@dataclass
class ControlPlane:
    name: str
    workdir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "clusters" / self.name / "kubeconfig.yaml"

    @property
    def logs(self) -> Path:
        return self.workdir / "clusters" / self.name / "logs"

    def _env(self) -> dict[str, str]:
        return binaries.tool_env({"KWOK_WORKDIR": str(self.workdir), "KUBECONFIG": str(self.kubeconfig)})

    def _config(self, bin_dir: Path) -> Path:
        config = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeVersion": binaries.K8S_VERSION,
                "etcdBinary": str(bin_dir / "etcd"),
                "kubeApiserverBinary": str(bin_dir / "kube-apiserver"),
                "kubeControllerManagerBinary": str(bin_dir / "kube-controller-manager"),
                "kubeSchedulerBinary": str(bin_dir / "kube-scheduler"),
                "kwokControllerBinary": str(bin_dir / "kwok"),
                "kubectlBinary": str(bin_dir / "kubectl"),
            },
        }
        path = self.workdir / f"{self.name}-kwokctl.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args], env=self._env(), text=True, capture_output=True, check=check, input=input
        )

    def start(self, timeout: float = 180) -> None:
        bin_dir = binaries.require()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stop()  # a cluster left behind by a killed run would hold the ports
        created = subprocess.run(
            ["kwokctl", "create", "cluster", "--name", self.name, "--config", str(self._config(bin_dir)), "--wait", f"{int(timeout)}s"],
            env=self._env(),
            text=True,
            capture_output=True,
        )
        if created.returncode != 0:
            raise RuntimeError(f"kwokctl create cluster failed (logs in {self.logs}):\n{created.stderr[-3000:]}")
        poll("kube-apiserver /readyz", lambda: self.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok", timeout)
        # Pods are rejected until the service-account controller has made the namespace's default SA.
        self.wait_namespace("default", timeout)

    def wait_namespace(self, namespace: str, timeout: float = 60) -> None:
        poll(
            f"service account default in namespace {namespace}",
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0,
            timeout,
        )

    def _pids(self) -> list[int]:
        folder = self.workdir / "clusters" / self.name / "pids"
        pids = []
        for f in folder.glob("*.pid") if folder.exists() else []:
            try:
                pids.append(int(f.read_text().strip()))
            except ValueError:
                continue
        return pids

    def stop(self, timeout: float = 30) -> None:
        """Delete the cluster and make sure none of its processes outlives it."""
        pids = self._pids()
        if not (self.workdir / "clusters" / self.name).exists():
            return
        subprocess.run(
            ["kwokctl", "delete", "cluster", "--name", self.name], env=self._env(), capture_output=True, text=True
        )
        def remaining() -> list[int]:
            return [p for p in pids if alive(p)]

        try:
            poll("control-plane processes to exit", lambda: not remaining(), timeout)
        except TimeoutError:
            for pid in remaining():
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")
