"""Run ``gpucost operator`` and ``gpucost agent`` as real child processes against a dev cluster,
logs to a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from gpucost.devcluster.controlplane import free_port, poll


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class _Child:
    kubeconfig: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def _launch(self, args: list[str], ready_url: str, timeout: float) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpucost", *args, *self._metrics_args()],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        poll(
            f"gpucost {args[0]} to answer {ready_url}",
            lambda: self._crashed() or _healthy(ready_url),
            timeout,
        )
        if self._crashed():
            raise RuntimeError(
                f"gpucost {args[0]} exited with {self.proc.returncode}; log: "
                f"{self.log}\n{self.tail()}"
            )

    def _metrics_args(self) -> list[str]:
        return ["--metrics-port", str(self.metrics_port)]

    def _crashed(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a node failure would: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class OperatorProcess(_Child):
    resync_seconds: float = 2.0
    autoscale_seconds: float | None = None
    """The autoscaler's interval; None = the resync interval."""

    def start(self, timeout: float = 60) -> None:
        # Objects created before the watches start are still seen: each watch begins with a list.
        url = f"http://127.0.0.1:{free_port()}/healthz"
        self._launch(
            [
                "operator",
                "--resync",
                str(self.resync_seconds),
                "--autoscale-interval",
                str(self.autoscale_seconds or self.resync_seconds),
                "--liveness",
                url,
                "--log-routine",
            ],
            url,
            timeout,
        )

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class AgentProcess(_Child):
    """The node agent for one (KWOK) node, on the fake NVML whose state file the caller edits."""

    node: str = ""
    nvml_state: Path | None = None
    proc_root: Path | None = None
    interval_seconds: float = 0.5
    grace_seconds: float = 2.0

    def start(self, timeout: float = 60) -> None:
        self._launch(
            [
                "agent",
                "--node",
                self.node,
                "--nvml",
                "fake",
                "--fake-nvml-state",
                str(self.nvml_state),
                "--proc-root",
                str(self.proc_root),
                "--interval",
                str(self.interval_seconds),
                "--grace",
                str(self.grace_seconds),
                "--mps-pipe-dir",
                str(self.proc_root / "no-mps"),
            ],
            f"http://127.0.0.1:{self.metrics_port}/metrics",
            timeout,
        )


@dataclass
class GatewayProcess(_Child):
    """``gpucost gateway`` on 127.0.0.1; its /metrics is on its own port (``metrics_port``)."""

    gateway_id: str = "gw-0"

    def _metrics_args(self) -> list[str]:
        return []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self, timeout: float = 60) -> None:
        self._launch(
            ["gateway", "--host", "127.0.0.1", "--port", str(self.metrics_port), "--id",
             self.gateway_id],
            f"{self.url}/healthz",
            timeout,
        )  # fmt: skip
