"""Budget periods and thresholds: what a namespace spent this day or month, and what to fire.

Spend is the same left Riemann sum as a workload's cost (core.cost.accrue): the rate the budget saw
at its last accounting, times the time since. A period boundary inside that interval splits it, so
the hour before midnight is charged to yesterday and the one after to today, even when the
operator was down across midnight. Periods start at local midnight (or the 1st of the month) in the
budget's time zone; zoneinfo gives the right offset on both sides of a DST change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from gpucost.core.cost import accrue


class Period(str, Enum):
    DAILY = "daily"
    MONTHLY = "monthly"


def period_bounds(period: Period, t: float, tz: ZoneInfo) -> tuple[float, float]:
    """[start, end) in epoch seconds of the period holding ``t``."""
    local = datetime.fromtimestamp(t, tz)
    if period is Period.DAILY:
        start = datetime(local.year, local.month, local.day, tzinfo=tz)
        day = start.date() + timedelta(days=1)
        end = datetime(day.year, day.month, day.day, tzinfo=tz)
    else:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=tz)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class Spend:
    period_start: float
    spent: float = 0.0
    reached: tuple[int, ...] = ()
    """Thresholds (percent) crossed this period: their Event is posted."""
    notified: tuple[int, ...] = ()
    """Thresholds the webhook accepted this period."""
    last_period_spent: float | None = None


def charge(
    old: Spend | None, period: Period, rate: float, since: float | None, now: float, tz: ZoneInfo
) -> Spend:
    """``old`` accounted up to ``since`` at ``rate`` $/hour, brought up to ``now``."""
    start, _ = period_bounds(period, now, tz)
    if old is None or since is None:
        return Spend(start)  # first sight of the budget: counting starts now, not at midnight
    if old.period_start == start:
        return replace(old, spent=accrue(old.spent, since, rate, now))
    # One or more boundaries since the last accounting: the period just ended gets its share.
    previous, _ = period_bounds(period, start - 1, tz)
    carried = old.spent if old.period_start == previous else 0.0
    last = accrue(carried, max(since, previous), rate, start)
    return Spend(start, spent=accrue(0.0, max(since, start), rate, now), last_period_spent=last)


def percent(spend: Spend, limit: float) -> float:
    return 100.0 * spend.spent / limit


def settle(spend: Spend, limit: float, thresholds: list[int]) -> tuple[Spend, list[int]]:
    """Thresholds newly crossed, and the spend with them marked reached.

    A raised limit can drop the spend back under thresholds already reached: those are forgotten,
    so crossing them again alerts again (and a budget raised past 100 % lifts enforcement)."""
    now_percent = percent(spend, limit)
    over = [t for t in thresholds if now_percent >= t]
    new = [t for t in over if t not in spend.reached]
    return replace(
        spend,
        reached=tuple(over),
        notified=tuple(t for t in spend.notified if t in over),
    ), new


def exceeded(spend: Spend, limit: float) -> bool:
    return percent(spend, limit) >= 100.0
