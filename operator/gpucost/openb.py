"""Reader for Alibaba's openb trace format (cluster-trace-gpu-v2023), used by the packing benchmark.

A malformed row stops the read with the file and line, never a half-read trace: a benchmark on a
silently truncated trace would report numbers for a workload nobody asked about.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from gpucost.core.packing.model import MILLI, NodeSpec, Task

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


class TraceError(ValueError):
    """A trace file that can't be used, with ``path:line`` in the message."""


@dataclass(frozen=True)
class TracedTask:
    task: Task
    created: int | None
    deleted: int | None
    """Seconds since the trace's start; None when the file has no times (the multigpu variants)."""


def _rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        handle = path.open(newline="")
    except OSError as e:
        raise TraceError(f"{path}: {e.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}")
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise TraceError(
                    f"{path}:{reader.line_num}: expected {len(reader.fieldnames or ())} fields"
                )
            rows.append((reader.line_num, row))
        return rows


def _int(
    path: Path, line: int, row: dict[str, str], column: str, *, optional: bool = False
) -> int | None:
    raw = (row.get(column) or "").strip()
    if raw == "" and optional:
        return None
    try:
        value = int(float(raw)) if "." in raw or "e" in raw.lower() else int(raw)
    except ValueError:
        raise TraceError(f"{path}:{line}: {column} must be a number, got {raw!r}") from None
    if value < 0:
        raise TraceError(f"{path}:{line}: {column} must not be negative, got {value}")
    return value


def read_nodes(path: Path) -> list[NodeSpec]:
    nodes = []
    for line, row in _rows(path, NODE_COLUMNS):
        gpus = _int(path, line, row, "gpu") or 0
        model = (row.get("model") or "").strip()
        if gpus and model in ("", "nan"):
            raise TraceError(f"{path}:{line}: a node with {gpus} GPUs needs a model")
        nodes.append(
            NodeSpec(
                name=row["sn"],
                cpu_milli=_int(path, line, row, "cpu_milli") or 0,
                memory_mib=_int(path, line, row, "memory_mib") or 0,
                gpus=gpus,
                model=model if gpus else None,
            )
        )
    if not nodes:
        raise TraceError(f"{path}: no nodes")
    return nodes


def read_pods(path: Path) -> list[TracedTask]:
    tasks = []
    for line, row in _rows(path, POD_COLUMNS):
        gpus = _int(path, line, row, "num_gpu") or 0
        milli = _int(path, line, row, "gpu_milli") or 0
        if gpus and not 0 < milli <= MILLI:
            raise TraceError(
                f"{path}:{line}: gpu_milli must be in 1..1000 for a GPU pod, got {milli}"
            )
        if gpus > 1 and milli != MILLI:
            raise TraceError(
                f"{path}:{line}: a {gpus}-GPU pod must ask for whole GPUs, got gpu_milli {milli}"
            )
        spec = (row.get("gpu_spec") or "").strip()
        models = frozenset(m for m in spec.split("|") if m) if spec and spec != "nan" else None
        tasks.append(
            TracedTask(
                Task(
                    cpu_milli=_int(path, line, row, "cpu_milli") or 0,
                    memory_mib=_int(path, line, row, "memory_mib") or 0,
                    gpus=gpus,
                    gpu_milli=milli if gpus else MILLI,
                    models=models,
                    name=row["name"],
                ),
                _int(path, line, row, "creation_time", optional=True),
                _int(path, line, row, "deletion_time", optional=True),
            )
        )
    if not tasks:
        raise TraceError(f"{path}: no pods")
    return tasks
