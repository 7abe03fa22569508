"""Prices as data: the files clouds publish (and a simple table for a ConfigMap), read into one
book of quotes, and a pool's price and expected price looked up in it.

Formats, told apart by their header (CSV) or shape (JSON):
- AWS's own price list (the Price List Bulk API's EC2 offer file, CSV): five metadata rows, its
  Publication Date the quotes' time, then one row per SKU and term; the on-demand hourly Linux,
  shared-tenancy, no-preinstalled-software, capacity-in-use rows are read;
- AWS, one row per instance type and region with on-demand, spot and the Spot Advisor
  interruption bucket (ec2instances.info's columns: ``instance_type, region, ondemand_usd_hr,
  spot_avg_usd_hr, spot_interrupt_freq``);
- GCP, one row per machine type and region (``machine_type, region, ondemand_usd_hr,
  spot_usd_hr``);
- AWS spot price history as ``aws ec2 describe-spot-price-history`` prints it
  (``{"SpotPriceHistory": [{"AvailabilityZone", "InstanceType", "SpotPrice", "Timestamp"}]}``):
  the newest price per zone, and per region the cheapest zone, which is where a launch that
  allows every zone lands;
- a table of ``instanceType, capacityType, region, usdPerHour[, interruptionsPerMonth]``.

Every error names the source and line. Several sources merge: for one (region, instance type,
capacity type) the quote with the newest ``as_of`` wins, so a spot history overrides a snapshot.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

HOURS_PER_MONTH = 730.0
SPOT_ADVISOR = {"<5%": 0.025, "5-10%": 0.075, "10-15%": 0.125, "15-20%": 0.175, ">20%": 0.25}
"""AWS Spot Advisor's interruption-frequency buckets (share of instances interrupted in a month),
each read as its middle; the open-ended top bucket as 25 %."""


class PriceError(ValueError):
    """A source that cannot be read; the message starts with the source and line."""


@dataclass(frozen=True)
class Quote:
    usd_per_hour: float
    as_of: float
    """Epoch seconds the source says the price is from (its timestamp, else when it was read)."""
    source: str
    """``source:line``: where to look when a price looks wrong."""
    interruptions_per_month: float | None = None


Key = tuple[str, str, str]
"""(region, instance type, capacity type)."""
Book = dict[Key, Quote]


def _number(raw: str, where: str, what: str) -> float | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise PriceError(f"{where}: {what} {raw!r} is not a number") from None
    if value < 0:
        raise PriceError(f"{where}: {what} {raw!r} is negative")
    return value


def _rows(
    text: str, source: str, need: set[str], first_line: int = 1
) -> Iterable[tuple[str, dict[str, str]]]:
    """``first_line``: the header's line number in the source (after any preamble)."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    missing = need - set(header)
    if missing:
        raise PriceError(f"{source}:{first_line}: missing columns {sorted(missing)}")
    for row in reader:
        where = f"{source}:{reader.line_num + first_line - 1}"
        if not row:
            continue
        if len(row) != len(header):
            raise PriceError(f"{where}: {len(row)} fields, the header has {len(header)}")
        yield where, dict(zip(header, row))


def _aws(text: str, source: str, as_of: float) -> Book:
    book: Book = {}
    need = {"instance_type", "region", "ondemand_usd_hr", "spot_avg_usd_hr", "spot_interrupt_freq"}
    for where, row in _rows(text, source, need):
        key = (row["region"], row["instance_type"])
        on_demand = _number(row["ondemand_usd_hr"], where, "ondemand_usd_hr")
        if on_demand is not None:
            book[(*key, "on-demand")] = Quote(on_demand, as_of, where)
        spot = _number(row["spot_avg_usd_hr"], where, "spot_avg_usd_hr")
        if spot is not None:
            bucket = row["spot_interrupt_freq"].strip()
            if bucket and bucket not in SPOT_ADVISOR:
                raise PriceError(f"{where}: spot_interrupt_freq {bucket!r} is not a Spot Advisor "
                                 f"bucket ({', '.join(SPOT_ADVISOR)})")  # fmt: skip
            book[(*key, "spot")] = Quote(spot, as_of, where, SPOT_ADVISOR.get(bucket))
    return book


def _gcp(text: str, source: str, as_of: float) -> Book:
    book: Book = {}
    for where, row in _rows(
        text, source, {"machine_type", "region", "ondemand_usd_hr", "spot_usd_hr"}
    ):
        key = (row["region"], row["machine_type"])
        for capacity, column in (("on-demand", "ondemand_usd_hr"), ("spot", "spot_usd_hr")):
            price = _number(row[column], where, column)
            if price is not None:
                book[(*key, capacity)] = Quote(price, as_of, where)
    return book


def _table(text: str, source: str, as_of: float) -> Book:
    book: Book = {}
    for where, row in _rows(text, source, {"instanceType", "capacityType", "region", "usdPerHour"}):
        capacity = row["capacityType"].strip()
        if capacity not in ("spot", "on-demand"):
            raise PriceError(f"{where}: capacityType {capacity!r} is not spot or on-demand")
        price = _number(row["usdPerHour"], where, "usdPerHour")
        if price is None:
            raise PriceError(f"{where}: usdPerHour is empty")
        rate = _number(row.get("interruptionsPerMonth") or "", where, "interruptionsPerMonth")
        key = (row["region"].strip(), row["instanceType"].strip(), capacity)
        book[key] = Quote(price, as_of, where, rate)
    return book


def _timestamp(raw: object, where: str) -> float:
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise PriceError(f"{where}: Timestamp {raw!r} is not an ISO 8601 time") from None


SPOT_PRICE_KEY = '"SpotPrice"'


def _spot_history(text: str, source: str) -> Book:
    try:
        entries = json.loads(text)["SpotPriceHistory"]
        if not isinstance(entries, list):
            raise TypeError("SpotPriceHistory is not a list")
    except (ValueError, KeyError, TypeError) as e:
        raise PriceError(f"{source}:1: not a describe-spot-price-history document ({e})") from None
    lines = text.splitlines()
    newest: dict[tuple[str, str], Quote] = {}
    for i, entry in enumerate(entries):
        # json has no line numbers; the entry's own "SpotPrice" line is found by counting them.
        where = f"{source}:{_nth_line(lines, SPOT_PRICE_KEY, i)}"
        try:
            zone, kind = str(entry["AvailabilityZone"]), str(entry["InstanceType"])
            price = _number(str(entry["SpotPrice"]), where, "SpotPrice")
            at = _timestamp(entry["Timestamp"], where)
        except (KeyError, TypeError):
            raise PriceError(f"{where}: an entry needs AvailabilityZone, InstanceType, "
                             "SpotPrice and Timestamp") from None  # fmt: skip
        if price is None:
            raise PriceError(f"{where}: SpotPrice is empty")
        if (zone, kind) not in newest or at > newest[(zone, kind)].as_of:
            newest[(zone, kind)] = Quote(price, at, where)
    book: Book = {}
    for (zone, kind), quote in newest.items():
        key = (re.sub(r"[a-z]$", "", zone), kind, "spot")
        if key not in book or quote.usd_per_hour < book[key].usd_per_hour:
            book[key] = quote
    return book


def _nth_line(lines: list[str], needle: str, n: int) -> int:
    seen = -1
    for number, line in enumerate(lines, 1):
        if needle in line:
            seen += 1
            if seen == n:
                return number
    return 1


OFFER_FILTER = {
    "TermType": "OnDemand",
    "Unit": "Hrs",
    "Operating System": "Linux",
    "Tenancy": "Shared",
    "Pre Installed S/W": "NA",
    "CapacityStatus": "Used",
}
"""The rows of an EC2 offer file that are a plain on-demand Linux node-hour."""


def _aws_offer_file(text: str, source: str) -> Book:
    lines = text.split("\n", 5)
    if len(lines) < 6:
        raise PriceError(f"{source}:1: an AWS offer file has 5 metadata rows, then a header")
    meta = dict(next(csv.reader([line]))[:2] for line in lines[:5] if line.count(",") >= 1)
    as_of = _timestamp(meta.get("Publication Date"), f"{source}:3")
    book: Book = {}
    need = {"PricePerUnit", "Instance Type", "Region Code", "TermType"}
    for where, row in _rows(lines[5], source, need, first_line=6):
        if any(row.get(k, v) != v for k, v in OFFER_FILTER.items()) or not row["Instance Type"]:
            continue
        price = _number(row["PricePerUnit"], where, "PricePerUnit")
        if price is None:
            raise PriceError(f"{where}: PricePerUnit is empty")
        book[(row["Region Code"], row["Instance Type"], "on-demand")] = Quote(price, as_of, where)
    return book


def parse(text: str, source: str, as_of: float) -> Book:
    """One source's quotes; ``as_of`` for rows that carry no time of their own."""
    if text.lstrip().startswith("{"):
        return _spot_history(text, source)
    if text.startswith('"FormatVersion"'):
        return _aws_offer_file(text, source)
    header = text.split("\n", 1)[0]
    if "spot_interrupt_freq" in header:
        return _aws(text, source, as_of)
    if "machine_type" in header:
        return _gcp(text, source, as_of)
    if "usdPerHour" in header:
        return _table(text, source, as_of)
    raise PriceError(
        f"{source}:1: unknown price format (header {header[:80]!r}); see the README's Prices"
    )


def merge(books: Iterable[Book]) -> Book:
    """The newest quote per key; on a tie the later source wins (a ConfigMap after a file)."""
    out: Book = {}
    for book in books:
        for key, quote in book.items():
            if key not in out or quote.as_of >= out[key].as_of:
                out[key] = quote
    return out


@dataclass(frozen=True)
class Priced:
    """A pool's price as the operator uses it."""

    usd_per_hour: float
    expected_usd_per_hour: float
    """What a useful node-hour costs once spot interruptions are counted: the price plus the
    share of each hour an interruption throws away (rate × lost work)."""
    source: str
    """``spec`` for an override, else the quote's ``source:line``."""
    as_of: float | None
    stale: bool
    interruptions_per_month: float | None


def expected_price(
    usd_per_hour: float, interruptions_per_month: float | None, lost_seconds: float
) -> float:
    """Each interruption wastes ``lost_seconds`` of paid node time (a replica's cold start, a
    job's work since its checkpoint), so a useful hour costs price × (1 + λ·lost), λ per hour."""
    if not interruptions_per_month:
        return usd_per_hour
    per_hour = interruptions_per_month / HOURS_PER_MONTH
    return usd_per_hour * (1 + per_hour * lost_seconds / 3600)


def resolve(
    *,
    override: float | None,
    region: str,
    instance_type: str,
    capacity_type: str,
    book: Mapping[Key, Quote],
    now: float,
    max_age_seconds: float,
    interruptions_per_month: float | None = None,
    lost_seconds: float = 0.0,
) -> Priced | None:
    """The pool's price: its override, else the book's quote (None when neither exists). The
    interruption rate is the pool's own where it gives one, else the quote's."""
    # An ODCR or capacity block bills at the on-demand rate (an RI's amortized rate: set it).
    listed = "on-demand" if capacity_type == "reserved" else capacity_type
    quote = book.get((region, instance_type, listed))
    rate = interruptions_per_month
    if rate is None and quote is not None:
        rate = quote.interruptions_per_month
    if capacity_type != "spot":
        rate = None
    if override is not None:
        price, source, as_of, stale = override, "spec", None, False
    elif quote is not None:
        price, source, as_of = quote.usd_per_hour, quote.source, quote.as_of
        stale = now - quote.as_of > max_age_seconds
    else:
        return None
    return Priced(price, expected_price(price, rate, lost_seconds), source, as_of, stale, rate)
