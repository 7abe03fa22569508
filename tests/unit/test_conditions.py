from datetime import datetime, timedelta, timezone

from gpucost.api.common import ConditionStatus, set_condition

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_transition_time_moves_only_when_status_changes():
    c = set_condition(
        [],
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="A",
        message="m",
        generation=1,
        now=T0,
    )
    later = T0 + timedelta(minutes=5)
    same = set_condition(
        c,
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="B",
        message="n",
        generation=2,
        now=later,
    )
    assert (
        same[0].last_transition_time == T0
        and same[0].reason == "B"
        and same[0].observed_generation == 2
    )
    flipped = set_condition(
        same,
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="C",
        message="",
        generation=2,
        now=later,
    )
    assert flipped[0].last_transition_time == later


def test_other_conditions_are_kept():
    c = set_condition(
        [], type="Placed", status=ConditionStatus.TRUE, reason="A", message="", generation=1, now=T0
    )
    c = set_condition(
        c, type="Ready", status=ConditionStatus.TRUE, reason="A", message="", generation=1, now=T0
    )
    assert [x.type for x in c] == ["Placed", "Ready"]
