"""A CompressionJob's next step: every branch, with the reason a user sees."""

from __future__ import annotations

import pytest

from gpucost.core.jobrun import Attempt, Step, decide

RUNNING = Attempt(exists=True, pod_phase="Running")


@pytest.mark.parametrize("phase,attempts,attempt,now,deadline,spent,max_cost,step,reason", [
    ("Pending", 0, None, 0, None, 0, None, Step.LAUNCH, "Placing"),
    ("Pending", 1, Attempt(exists=False), 0, None, 0, None, Step.LAUNCH, "Placing"),  # its Job was deleted
    ("Pending", 1, Attempt(exists=True), 0, None, 0, None, Step.WAIT, "Starting"),
    ("Running", 1, RUNNING, 0, None, 0, None, Step.WAIT, "Running"),
    ("Running", 1, Attempt(exists=True, pod_phase="Succeeded"), 0, None, 0, None, Step.SUCCEED, "Completed"),
    ("Running", 1, Attempt(exists=True, pod_phase="Running", node_lost=True), 0, None, 0, None, Step.RELAUNCH, "Interrupted"),
    ("Running", 2, Attempt(exists=True, pod_phase="Failed", node_lost=True), 0, None, 0, None, Step.RELAUNCH, "Interrupted"),
    ("Running", 1, Attempt(exists=True, pod_phase="Failed", failure="model.pt: no such file"), 0, None, 0, None,
     Step.FAIL, "WorkerFailed"),
    ("Running", 1, RUNNING, 100, 100, 0, None, Step.STOP, "DeadlineExceeded"),
    ("Running", 1, RUNNING, 0, 100, 5.0, 5.0, Step.STOP, "MaxCostReached"),
    ("Succeeded", 1, None, 1e9, 100, 99.0, 5.0, Step.WAIT, "Finished"),  # finished stays finished
])
def test_next_step(phase, attempts, attempt, now, deadline, spent, max_cost, step, reason):
    d = decide(phase, attempts, attempt, now, deadline, spent, max_cost)
    assert (d.step, d.reason) == (step, reason)


def test_messages_say_why():
    assert decide("Running", 1, Attempt(exists=True, pod_phase="Failed", failure="model.pt: no such file"),
                  0, None, 0, None).message == "model.pt: no such file"
    assert decide("Running", 3, Attempt(exists=True, node_lost=True), 0, None, 0, None).message == (
        "attempt 3 lost its node; attempt 4 resumes from the checkpoint")
    assert decide("Running", 1, RUNNING, 0, None, 1.25, 1.0).message == "stopped: $1.2500 spent, maxCost is $1.0000"
