"""`gpucost compress` run as the Job's pod runs it: a subprocess with its termination log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_compress(
    tmp_path: Path,
    model: str,
    dataset: str,
    method: dict,
    timeout: float,
    output: str | None = None,
    **env: str,
) -> tuple[subprocess.CompletedProcess, str]:
    """The finished process and what it wrote to its termination log."""
    log = tmp_path / "termination-log"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpucost",
            "compress",
            "--model",
            model,
            "--dataset",
            dataset,
            "--output",
            output or str(tmp_path / "out"),
            "--method",
            json.dumps(method),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GPUCOST_TERMINATION_LOG": str(log), **env},
    )
    return out, log.read_text()
