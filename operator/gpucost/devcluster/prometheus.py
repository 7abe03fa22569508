"""A real Prometheus server (Debian's package, installed by scripts/setup.sh) for tests and the
demo.

It scrapes the given targets every second and keeps its data in a throw-away folder.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gpucost.devcluster.binaries import ToolsMissing
from gpucost.devcluster.controlplane import free_port, poll, stop_process


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class PrometheusServer:
    workdir: Path
    targets: list[str]
    """host:port of each /metrics endpoint to scrape."""
    port: int = field(default_factory=free_port)
    replicas_file: Path | None = None
    """A file_sd JSON of serving replicas (the serving harness writes it, labelled namespace and
    pool, as a PodMonitor would relabel them)."""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ToolsMissing(
                "prometheus is not installed: run scripts/setup.sh (it installs Debian's "
                "prometheus package)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        jobs: list[dict] = [{"job_name": "gpucost", "static_configs": [{"targets": self.targets}]}]
        if self.replicas_file is not None:
            if not self.replicas_file.exists():
                self.replicas_file.write_text("[]")
            jobs.append(
                {
                    "job_name": "replicas",
                    "file_sd_configs": [
                        {"files": [str(self.replicas_file)], "refresh_interval": "1s"}
                    ],
                }
            )
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": jobs,
                }
            )
        )
        log = (self.workdir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        poll("Prometheus ready", lambda: self.proc.poll() is not None or _ready(self.url), timeout)
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with {self.proc.returncode}; log: "
                f"{self.workdir / 'prometheus.log'}"
            )

    def stop(self) -> None:
        stop_process(self.proc)
