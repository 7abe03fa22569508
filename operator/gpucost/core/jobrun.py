"""A CompressionJob's next step, from what its current attempt's Job and pod look like now.

One batch/v1 Job per attempt, pinned to the GPU its placement chose: a Job's pod template can't
move, so an interruption (the node reclaimed or gone) ends the attempt and the next one is placed
afresh; the worker resumes from its checkpoint. A worker that fails on its own is not retried: its
last line says why, and running it again would say the same.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from gpucost.api.common import rfc3339

TERMINAL = frozenset({"Succeeded", "Failed"})
UNPLACED = frozenset({"Unschedulable", "NoMatchingGPU"})
"""The Ready reasons of a job whose worker no node has room for now (the autoscaler's cue)."""


@dataclass(frozen=True)
class Attempt:
    exists: bool
    pod_phase: str | None = None
    """The attempt's pod: Pending, Running, Succeeded, Failed; None before the Job made one."""
    node_lost: bool = False
    """Its node is gone, reclaimed (interruption taint), or the pod was disrupted."""
    message: str = ""
    """The worker's termination message: its one-line summary, or the one clear line it failed
    with."""
    lost_why: str = ""
    """What happened to the node, naming it, when it is known."""
    results: dict[str, Any] | None = None
    """The figures a succeeded worker reported beside its summary."""


def termination(message: str) -> tuple[str, dict[str, Any] | None]:
    """The worker's termination message as (its line, its figures): a worker that succeeded
    writes ``{"summary": ..., "results": {...}}``; one that failed (or an older one), a line."""
    text = message.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("summary"), str):
        results = data.get("results")
        return data["summary"], results if isinstance(results, dict) else None
    lines = text.splitlines()
    return (lines[-1] if lines else ""), None


class Step(str, enum.Enum):
    WAIT = "wait"
    LAUNCH = "launch"
    RELAUNCH = "relaunch"
    """Delete the interrupted attempt, then launch the next."""
    SUCCEED = "succeed"
    FAIL = "fail"
    STOP = "stop"
    """Delete the running attempt: deadline or maxCost."""


@dataclass(frozen=True)
class Decision:
    step: Step
    phase: str
    reason: str
    message: str


def _why(lost: str) -> str:
    return f" ({lost})" if lost else ""


def decide(
    attempts: int,
    attempt: Attempt | None,
    now: float,
    deadline: float | None,
    spent: float,
    max_cost: float | None,
) -> Decision:
    """Only for a job not yet finished (the caller leaves a Succeeded or Failed job as it is)."""
    if deadline is not None and now >= deadline:
        return Decision(
            Step.STOP,
            "Failed",
            "DeadlineExceeded",
            f"stopped: the deadline {rfc3339(deadline)} passed",
        )
    if max_cost is not None and spent >= max_cost:
        return Decision(
            Step.STOP,
            "Failed",
            "MaxCostReached",
            f"stopped: ${spent:.4f} spent, maxCost is ${max_cost:.4f}",
        )
    if attempts == 0 or attempt is None or not attempt.exists:
        return Decision(Step.LAUNCH, "Pending", "Placing", "placing the worker on a GPU")
    if attempt.pod_phase == "Succeeded":
        return Decision(
            Step.SUCCEED, "Succeeded", "Completed", attempt.message or "the worker finished"
        )
    if attempt.node_lost:
        return Decision(
            Step.RELAUNCH,
            "Pending",
            "Interrupted",
            f"attempt {attempts} lost its node{_why(attempt.lost_why)}; "
            f"attempt {attempts + 1} resumes from the checkpoint",
        )
    if attempt.pod_phase == "Failed":
        return Decision(
            Step.FAIL,
            "Failed",
            "WorkerFailed",
            attempt.message or "the worker exited with an error",
        )
    if attempt.pod_phase == "Running":
        return Decision(Step.WAIT, "Running", "Running", f"attempt {attempts} running")
    return Decision(Step.WAIT, "Pending", "Starting", f"attempt {attempts} starting")
