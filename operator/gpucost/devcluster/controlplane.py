"""Start and stop etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK.

kwokctl's binary runtime runs them as local processes on 127.0.0.1; this module adds the waits a
test needs (API ready, default service account present) and checks nothing is left running.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gpucost import names
from gpucost.devcluster import binaries

POD_CIDR = "10.244.0.1/16"
"""KWOK's pod IPs. Not loopback: EndpointSlices refuse 127.0.0.0/8 addresses."""
SERVE = "devcluster.gpucost.dev/serve"
"""Pod annotation (any value): the serving harness runs this pod's server; see kwok_stages."""
OWNER = "owner.pid"
CHILDREN = "children"


class ControlPlaneDied(RuntimeError):
    pass


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return -1


def reap_orphans(workdir: Path) -> list[str]:
    """Stop clusters under ``workdir`` whose owning process is gone (a test run that was killed)."""
    reaped = []
    for owner in (
        sorted((workdir / "clusters").glob(f"*/{OWNER}")) if (workdir / "clusters").exists() else []
    ):
        if not alive(_read_pid(owner)):
            ControlPlane(owner.parent.name, workdir).stop()
            reaped.append(owner.parent.name)
    return reaped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen | None, grace: float = 15) -> None:
    """SIGTERM a helper server, then SIGKILL it if it is still there after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f": {last_error}" if last_error else "")
    )


@dataclass
class ControlPlane:
    name: str
    workdir: Path
    apiserver_args: dict[str, str] = field(default_factory=dict)
    """Extra kube-apiserver flags (the autoscaling benchmark's audit log)."""

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "clusters" / self.name / "kubeconfig.yaml"

    @property
    def logs(self) -> Path:
        return self.workdir / "clusters" / self.name / "logs"

    def _env(self) -> dict[str, str]:
        return binaries.tool_env(
            {"KWOK_WORKDIR": str(self.workdir), "KUBECONFIG": str(self.kubeconfig)}
        )

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
            # Without a default route (an offline CI box) the apiserver cannot pick an address
            # to advertise and exits at once; loopback is the only address it needs here.
            "componentsPatches": [
                {
                    "name": "kube-apiserver",
                    "extraArgs": [
                        {"key": key, "value": value}
                        for key, value in {
                            "advertise-address": "127.0.0.1",
                            **self.apiserver_args,
                        }.items()
                    ],
                },
                # kube-scheduler's client defaults to 50 requests/s: binding a burst of 1,000
                # pods (a binding and an Event each) waited 40 s on that alone. Large clusters
                # raise it; so does this one, so a burst measures the operator, not the throttle.
                # Pod IPs from the range scripts/netns.sh makes local, so the serving harness can
                # listen on each replica's own IP and port.
                {"name": "kwok-controller", "extraArgs": [{"key": "cidr", "value": POD_CIDR}]},
                {
                    "name": "kube-scheduler",
                    "extraArgs": [
                        {"key": "kube-api-qps", "value": "500"},
                        {"key": "kube-api-burst", "value": "1000"},
                    ],
                },
            ],
        }
        path = self.workdir / f"{self.name}-kwokctl.yaml"
        path.write_text(yaml.safe_dump_all([config, *kwok_stages(bin_dir)]))
        return path

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Bounded: a call that blocks (e.g. delete waiting on a stuck pod) fails instead of
        hanging a run."""
        return subprocess.run(
            ["kubectl", *args],
            env=self._env(),
            text=True,
            capture_output=True,
            check=check,
            input=input,
            timeout=timeout,
        )

    def start(self, timeout: float = 180) -> None:
        bin_dir = binaries.require()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stop()  # a cluster left behind by a killed run would hold the ports
        created = subprocess.run(
            [
                "kwokctl",
                "create",
                "cluster",
                "--name",
                self.name,
                "--config",
                str(self._config(bin_dir)),
            ],
            env=self._env(),
            text=True,
            capture_output=True,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"kwokctl create cluster failed (logs in {self.logs}):\n{created.stderr[-3000:]}"
            )
        (self.workdir / "clusters" / self.name / OWNER).write_text(str(os.getpid()))
        # Our own wait (not kwokctl's --wait), so a component that dies fails the start at once.
        poll("kube-apiserver /readyz", lambda: self._check_components() or self._readyz(), timeout)
        # Pods are rejected until the service-account controller has made the namespace's default
        # SA.
        self.wait_namespace("default", timeout)

    def _readyz(self) -> bool:
        return self.kubectl("get", "--raw", "/readyz", check=False).stdout.strip() == "ok"

    def _check_components(self) -> None:
        dead = [f.stem for f in self._pid_files() if not alive(_read_pid(f))]
        if dead:
            tails = "\n".join(
                f"--- {name}.log ---\n"
                + "\n".join(
                    (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-5:]
                )
                for name in dead
                if (self.logs / f"{name}.log").exists()
            )
            raise ControlPlaneDied(
                f"{', '.join(dead)} exited during start (logs in {self.logs}):\n{tails}"
            )

    def wait_namespace(self, namespace: str, timeout: float = 60) -> None:
        poll(
            f"service account default in namespace {namespace}",
            lambda: (
                self.kubectl(
                    "get", "serviceaccount", "default", "-n", namespace, check=False
                ).returncode
                == 0
            ),
            timeout,
        )

    def _pid_files(self) -> list[Path]:
        folder = self.workdir / "clusters" / self.name / "pids"
        return sorted(folder.glob("*.pid")) if folder.exists() else []

    def pids(self) -> list[int]:
        return [p for p in (_read_pid(f) for f in self._pid_files()) if p > 0]

    def adopt(self, pid: int) -> None:
        """A process started for this cluster (the demo's operator): ``stop`` ends it with the
        cluster, so a later ``demo --down`` or re-run stops it even from another process."""
        folder = self.workdir / "clusters" / self.name / CHILDREN
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{pid}.pid").write_text(str(pid))

    def children(self) -> list[int]:
        """Adopted processes still alive (a recycled pid running something else is not ours)."""
        folder = self.workdir / "clusters" / self.name / CHILDREN
        pids = [_read_pid(f) for f in folder.glob("*.pid")] if folder.exists() else []
        return [p for p in pids if alive(p) and b"gpucost" in _cmdline(p)]

    def stop(self, timeout: float = 30) -> None:
        """Delete the cluster; none of its processes, nor those it adopted, outlives it."""
        if not (self.workdir / "clusters" / self.name).exists():
            return
        children = self.children()
        for pid in children:
            os.kill(pid, signal.SIGTERM)  # first, so they stop before the API server they talk to
        pids = self.pids() + children

        def remaining() -> list[int]:
            return [p for p in pids if alive(p)]

        try:
            poll("adopted processes to exit", lambda: not any(alive(p) for p in children), timeout)
        except TimeoutError:
            pass  # killed below with the rest
        subprocess.run(
            ["kwokctl", "delete", "cluster", "--name", self.name],
            env=self._env(),
            capture_output=True,
            text=True,
        )
        try:
            poll("control-plane processes to exit", lambda: not remaining(), timeout)
        except TimeoutError:
            for pid in remaining():
                os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def kwok_stages(bin_dir: Path) -> list[dict]:
    """KWOK's default node and pod stages, with node-initialize held back by the node's
    boot-delay annotation (kwok provider nodes stay NotReady that long, like a booting instance) and
    a Job pod's completion by its run-time annotation (a worker that takes that long).

    A pod annotated ``SERVE`` is served by the serving harness (``devcluster.serving``): KWOK only
    starts it (Running, a pod IP) and the harness's prober sets Ready from the real server's
    ``/health``, as the kubelet would."""
    stages = [
        yaml.safe_load(f.read_text()) for f in sorted((bin_dir / "kwok-stages").glob("*.yaml"))
    ]
    delays = {"node-initialize": names.KWOK_BOOT_DELAY, "pod-complete": names.KWOK_RUN_TIME}
    served = {"key": f'.metadata.annotations["{SERVE}"]', "operator": "DoesNotExist"}
    for stage in stages:
        key = delays.get(stage["metadata"]["name"])
        if key:
            stage["spec"]["delay"] = {
                "durationMilliseconds": 0,
                "durationFrom": {"expressionFrom": f'.metadata.annotations["{key}"]'},
            }
    ready = next(s for s in stages if s["metadata"]["name"] == "pod-ready")
    started = copy.deepcopy(ready)
    ready["spec"]["selector"]["matchExpressions"].append(served)
    started["metadata"]["name"] = "pod-start-served"
    started["spec"]["selector"]["matchExpressions"].append({**served, "operator": "Exists"})
    template = started["spec"]["next"]["statusTemplate"]
    template = re.sub(
        r'status: "True"(\s+)type: (Ready|ContainersReady)\b',
        r'status: "False"\1type: \2',
        template,
    )
    started["spec"]["next"]["statusTemplate"] = template.replace("ready: true", "ready: false")
    return [*stages, started]


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")
