"""Run ``gpucost operator`` as a real child process against a dev cluster, logs to a file."""

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
class OperatorProcess:
    kubeconfig: Path
    log: Path
    resync_seconds: float = 2.0
    autoscale_seconds: float | None = None
    """The autoscaler's interval; None = the resync interval."""
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        handle = self.log.open("ab")
        url = f"http://127.0.0.1:{free_port()}/healthz"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpucost", "operator", "--resync", str(self.resync_seconds), "--autoscale-interval", str(self.autoscale_seconds or self.resync_seconds), "--liveness", url, "--log-routine",
             "--metrics-port", str(self.metrics_port)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        # Objects created before the watches start are still seen: each watch begins with a list.
        poll("the operator's liveness endpoint", lambda: self._crashed() or _healthy(url), timeout)
        if self._crashed():
            raise RuntimeError(f"operator exited with {self.proc.returncode}; log: {self.log}\n{self.tail()}")

    def _crashed(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
