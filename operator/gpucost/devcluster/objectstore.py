"""A real S3-compatible object store for the tests: SeaweedFS (``weed mini``, built from its Go
module by scripts/build-control-plane.sh) on loopback, with one access key, in a throw-away
folder.

Every port is chosen free and every extra (WebDAV, the admin UI, telemetry) is off, so parallel
runs cannot collide and nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucost.devcluster.binaries import ToolsMissing, bin_dir
from gpucost.devcluster.controlplane import free_port, poll, stop_process


@dataclass
class ObjectStore:
    workdir: Path
    access_key: str = field(default_factory=lambda: "gpucost" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a worker needs to reach it (as the job's Secret and s3EndpointURL give it)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 90) -> None:
        binary = bin_dir() / "weed"
        if not os.access(binary, os.X_OK):
            raise ToolsMissing(
                f"{binary} is missing: run scripts/setup.sh (it builds SeaweedFS from its Go "
                "module)"
            )
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
        config.write_text(
            json.dumps(
                {"identities": [{"name": "tests", "credentials": [identity], "actions": ["Admin"]}]}
            )
        )
        ports = {
            flag: free_port()
            for flag in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
            )
        }
        log = (self.workdir / "weed.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}",
                f"-s3.config={config}",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                *(f"-{flag}={port}" for flag, port in ports.items()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        poll("SeaweedFS S3 answering", lambda: self._exited() or self._answers(), timeout)
        if self._exited():
            raise RuntimeError(
                f"weed mini exited with {self.proc.returncode}; log: {self.workdir / 'weed.log'}"
            )

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _answers(self) -> bool:
        """A bucket listing works: the S3 gateway, the filer and a volume are all up."""
        try:
            self.client().list_buckets()
        except Exception:  # noqa: BLE001 - not up yet, whatever the reason
            return False
        return True

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def bucket(self, name: str, timeout: float = 30) -> None:
        """Create a bucket, retrying while the store finishes allocating its first volume."""

        def made() -> bool:
            try:
                self.client().create_bucket(Bucket=name)
            except Exception as e:  # noqa: BLE001
                return "BucketAlreadyOwnedByYou" in str(e)
            return True

        poll(f"bucket {name}", made, timeout)

    def stop(self) -> None:
        stop_process(self.proc)
