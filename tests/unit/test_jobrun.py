"""A CompressionJob's next step: every branch, with the reason a user sees."""

from __future__ import annotations

import pytest

from gpucost.core.jobrun import Attempt, Step, decide, termination

RUNNING = Attempt(exists=True, pod_phase="Running")


@pytest.mark.parametrize(
    "attempts,attempt,now,deadline,spent,max_cost,step,reason",
    [
        (0, None, 0, None, 0, None, Step.LAUNCH, "Placing"),
        (1, Attempt(exists=False), 0, None, 0, None, Step.LAUNCH, "Placing"),  # its Job was deleted
        (1, Attempt(exists=True), 0, None, 0, None, Step.WAIT, "Starting"),
        (1, RUNNING, 0, None, 0, None, Step.WAIT, "Running"),
        (
            1,
            Attempt(exists=True, pod_phase="Succeeded"),
            0,
            None,
            0,
            None,
            Step.SUCCEED,
            "Completed",
        ),
        (
            1,
            Attempt(exists=True, pod_phase="Running", node_lost=True),
            0,
            None,
            0,
            None,
            Step.RELAUNCH,
            "Interrupted",
        ),
        (
            2,
            Attempt(exists=True, pod_phase="Failed", node_lost=True),
            0,
            None,
            0,
            None,
            Step.RELAUNCH,
            "Interrupted",
        ),
        (
            1,
            Attempt(exists=True, pod_phase="Failed", message="model.pt: no such file"),
            0,
            None,
            0,
            None,
            Step.FAIL,
            "WorkerFailed",
        ),
        (1, RUNNING, 100, 100, 0, None, Step.STOP, "DeadlineExceeded"),
        (1, RUNNING, 0, 100, 5.0, 5.0, Step.STOP, "MaxCostReached"),
    ],
)
def test_next_step(attempts, attempt, now, deadline, spent, max_cost, step, reason):
    d = decide(attempts, attempt, now, deadline, spent, max_cost)
    assert (d.step, d.reason) == (step, reason)


def test_messages_say_why():
    assert (
        decide(
            1,
            Attempt(exists=True, pod_phase="Failed", message="model.pt: no such file"),
            0,
            None,
            0,
            None,
        ).message
        == "model.pt: no such file"
    )
    assert decide(3, Attempt(exists=True, node_lost=True), 0, None, 0, None).message == (
        "attempt 3 lost its node; attempt 4 resumes from the checkpoint"
    )
    cordoned = Attempt(
        exists=True, pod_phase="Pending", node_lost=True, lost_why="node n1 is cordoned"
    )
    assert decide(1, cordoned, 0, None, 0, None).message == (
        "attempt 1 lost its node (node n1 is cordoned); attempt 2 resumes from the checkpoint"
    )
    assert (
        decide(1, RUNNING, 0, None, 1.25, 1.0).message
        == "stopped: $1.2500 spent, maxCost is $1.0000"
    )


def test_success_shows_the_workers_summary():
    done = Attempt(
        exists=True,
        pod_phase="Succeeded",
        message="quantize: 1.21 MB -> 0.32 MB (27 %), accuracy 96.9 -> 96.7",
    )
    assert decide(1, done, 0, None, 0, None).message.startswith("quantize: 1.21 MB")


def test_a_termination_message_is_a_line_or_the_summary_and_figures_of_a_success():
    assert termination("loading\nmodel x: no such directory\n") == (
        "model x: no such directory",
        None,
    )
    ok = '{"summary": "quantize W4A16: 38 %", "results": {"weightRatio": 0.38}}'
    assert termination(ok) == ("quantize W4A16: 38 %", {"weightRatio": 0.38})
    assert termination('{"summary": "done", "results": 3}') == ("done", None)
    assert termination("") == ("", None)
