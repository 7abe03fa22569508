"""What every worker step shares: the one-line error a job's status shows, and local paths
(gpucost.worker.storage stages remote ones)."""

from __future__ import annotations

from pathlib import Path


class WorkerError(Exception):
    """Bad input: the worker exits non-zero with this one line, which becomes the job's message."""


def first_line(error: BaseException) -> str:
    """A library's exception as the start of one status line (its first line, or its type)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def local(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise WorkerError(f"{uri}: a local path or file:// is needed here")
    return Path(uri)
