"""Budget periods, spend across boundaries and thresholds: numbers a person can check by hand."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gpucost.api.budget import BudgetSpec, ClusterBudgetSpec, LabelSelector
from gpucost.core.budget import Period, Spend, charge, exceeded, period_bounds, settle
from gpucost.handlers.budget import selector_string

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz: ZoneInfo = UTC) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def test_a_day_starts_at_local_midnight_and_a_dst_day_is_23_hours_long():
    start, end = period_bounds(Period.DAILY, at("2026-03-29 12:00", BERLIN), BERLIN)
    assert start == at("2026-03-29 00:00", BERLIN) == at("2026-03-28 23:00")  # CET, UTC+1
    assert end == at("2026-03-30 00:00", BERLIN) == at("2026-03-29 22:00")  # CEST, UTC+2
    assert end - start == 23 * 3600


def test_a_month_runs_from_the_first_to_the_first_and_december_rolls_into_january():
    assert period_bounds(Period.MONTHLY, at("2026-02-14 09:30"), UTC) == (
        at("2026-02-01 00:00"),
        at("2026-03-01 00:00"),
    )
    assert period_bounds(Period.MONTHLY, at("2026-12-31 23:59"), UTC) == (
        at("2026-12-01 00:00"),
        at("2027-01-01 00:00"),
    )


def test_spend_accrues_the_rate_seen_at_the_last_accounting():
    first = charge(None, Period.DAILY, 0.0, None, at("2026-05-05 10:00"), UTC)
    assert first == Spend(at("2026-05-05 00:00"))  # counting starts when the budget is first seen
    later = charge(first, Period.DAILY, 6.0, at("2026-05-05 10:00"), at("2026-05-05 10:30"), UTC)
    assert later.spent == pytest.approx(3.0)  # $6/h for half an hour


def test_midnight_splits_the_interval_between_yesterday_and_today():
    old = Spend(at("2026-05-05 00:00"), spent=10.0, reached=(50,), notified=(50,))
    new = charge(old, Period.DAILY, 4.0, at("2026-05-05 23:00"), at("2026-05-06 00:15"), UTC)
    assert new.period_start == at("2026-05-06 00:00")
    assert new.last_period_spent == pytest.approx(14.0)  # 10 + one hour at $4
    assert new.spent == pytest.approx(1.0)  # a quarter hour at $4
    assert new.reached == () and new.notified == ()  # a new period alerts afresh


def test_an_operator_down_for_days_charges_only_the_day_before_to_last_period():
    old = Spend(at("2026-05-01 00:00"), spent=3.0)
    new = charge(old, Period.DAILY, 1.0, at("2026-05-01 12:00"), at("2026-05-04 06:00"), UTC)
    assert new.last_period_spent == pytest.approx(24.0)  # May 3rd, all of it at $1/h
    assert new.spent == pytest.approx(6.0)


def test_each_threshold_fires_once_and_a_raised_limit_rearms_it():
    spend = Spend(0.0, spent=8.5)
    spend, fired = settle(spend, 10.0, [50, 80, 100])
    assert fired == [50, 80] and not exceeded(spend, 10.0)
    spend, fired = settle(spend, 10.0, [50, 80, 100])
    assert fired == []  # already reached this period
    spend, fired = settle(
        Spend(0.0, spent=10.0, reached=spend.reached, notified=(50, 80)), 10.0, [50, 80, 100]
    )
    assert fired == [100] and exceeded(spend, 10.0)
    raised, fired = settle(spend, 20.0, [50, 80, 100])  # the team got more money: 50 %
    assert (
        fired == []
        and raised.reached == (50,)
        and raised.notified == (50,)
        and not exceeded(raised, 20.0)
    )


def test_the_model_rejects_what_the_schema_cannot_know():
    with pytest.raises(ValidationError, match="IANA time zone"):
        BudgetSpec.model_validate({"daily": 10, "timeZone": "Mars/Olympus_Mons"})
    with pytest.raises(ValidationError, match="daily, monthly or both"):
        ClusterBudgetSpec.model_validate({"thresholds": [80]})
    assert BudgetSpec.model_validate({"monthly": 5, "thresholds": [100, 50, 50]}).thresholds == [
        50,
        100,
    ]


def test_a_namespace_selector_becomes_the_api_servers_label_query():
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"team": "ml", "env": "prod"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "sandbox", "operator": "DoesNotExist"},
                {"key": "cost-center", "operator": "Exists"},
                {"key": "region", "operator": "NotIn", "values": ["cn"]},
            ],
        }
    )
    assert (
        selector_string(selector)
        == "env=prod,team=ml,tier in (a,b),!sandbox,cost-center,region notin (cn)"
    )
    assert selector_string(LabelSelector()) == ""  # every namespace
    with pytest.raises(ValidationError, match="In and NotIn need values"):
        LabelSelector.model_validate({"matchExpressions": [{"key": "k", "operator": "In"}]})
