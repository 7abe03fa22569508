"""Price sources as published: read, merged, looked up for a pool, and spot ranked by expected
cost."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gpucost.core.inventory import Ask
from gpucost.core.prices import PriceError, Quote, expected_price, merge, parse, resolve
from gpucost.core.scaleup import Offer, Pending, plan_scale_up
from tests.builders import gpu_node

PRICES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "prices"
AWS = PRICES / "aws_ec2_gpu_linux_ondemand_spot.csv"
GCP = PRICES / "gcp_gpu_machine_types_ondemand_spot.csv"


def test_the_aws_snapshot_as_published_gives_on_demand_spot_and_the_interruption_bucket():
    book = parse(AWS.read_text(), "aws.csv", as_of=1000.0)
    assert book[("us-east-1", "g5.xlarge", "on-demand")].usd_per_hour == 1.006
    spot = book[("us-east-1", "g5.xlarge", "spot")]
    assert spot.usd_per_hour == 0.39388
    assert spot.interruptions_per_month == 0.25  # Spot Advisor ">20%"
    assert spot.source == "aws.csv:481" and spot.as_of == 1000.0
    # g2.2xlarge has no spot price in the snapshot: only its on-demand quote exists.
    assert ("ap-northeast-1", "g2.2xlarge", "spot") not in book
    assert book[("ap-northeast-1", "g2.2xlarge", "on-demand")].usd_per_hour == 0.898


def test_the_gcp_snapshot_gives_on_demand_and_spot_without_an_interruption_figure():
    book = parse(GCP.read_text(), "gcp.csv", as_of=0.0)
    spot = book[("asia-east1", "a2-highgpu-1g", "spot")]
    assert spot.usd_per_hour == 0.444055 and spot.interruptions_per_month is None
    assert book[("asia-east1", "a2-highgpu-1g", "on-demand")].usd_per_hour == 3.790142


AWS_HEADER = AWS.read_text().split("\n", 1)[0]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            AWS_HEADER + "\ng5.xlarge,GPU,A10G,1,24,4,16,us-east-1,cheap,0.39,,,,\n",
            "prices.csv:2: ondemand_usd_hr 'cheap' is not a number",
        ),
        (
            AWS_HEADER
            + "\n"
            + "g5.xlarge,GPU,A10G,1,24,4,16,us-east-1,1,0.3,,,,>20%\n" * 2
            + "g5.xlarge,GPU,A10G,1,24,4,16,us-east-1,1,0.3,,,,often\n",
            "prices.csv:4: spot_interrupt_freq 'often' is not a Spot Advisor bucket",
        ),
        (AWS_HEADER + "\ng5.xlarge,GPU,A10G\n", "prices.csv:2: 3 fields"),
        (
            AWS_HEADER + "\ng5.xlarge,GPU,A10G,1,24,4,16,us-east-1,-1,0.3,,,,>20%\n",
            "prices.csv:2: ondemand_usd_hr '-1' is negative",
        ),
        (
            "instanceType,region,usdPerHour\nx,y,1\n",
            "prices.csv:1: missing columns ['capacityType']",
        ),
        (
            "instanceType,capacityType,region,usdPerHour\ng5.xlarge,reserved,us-east-1,1\n",
            "prices.csv:2: capacityType 'reserved' is not spot or on-demand",
        ),
        ("name,price\nx,1\n", "prices.csv:1: unknown price format"),
        ('{"SpotPriceHistory": 3}', "prices.csv:1: not a describe-spot-price-history document"),
    ],
)
def test_a_malformed_source_names_its_file_and_line(text, message):
    with pytest.raises(PriceError) as e:
        parse(text, "prices.csv", as_of=0.0)
    assert str(e.value).startswith(message)


def history(*entries: tuple[str, str, str, str]) -> str:
    rows = [
        {"AvailabilityZone": z, "InstanceType": t, "ProductDescription": "Linux/UNIX",
         "SpotPrice": p, "Timestamp": ts}
        for z, t, p, ts in entries
    ]  # fmt: skip
    return json.dumps({"SpotPriceHistory": rows}, indent=4)


def test_spot_history_takes_each_zones_newest_price_and_the_cheapest_zone_per_region():
    book = parse(
        history(
            ("us-east-1a", "g5.xlarge", "0.50", "2026-12-01T10:00:00+00:00"),
            ("us-east-1a", "g5.xlarge", "0.45", "2026-12-01T11:00:00+00:00"),  # newer: wins
            ("us-east-1b", "g5.xlarge", "0.41", "2026-12-01T09:00:00+00:00"),  # cheapest zone
            ("us-west-2c", "g5.xlarge", "0.60", "2026-12-01T09:00:00+00:00"),
        ),
        "spot.json",
        as_of=0.0,
    )
    east = book[("us-east-1", "g5.xlarge", "spot")]
    assert east.usd_per_hour == 0.41
    assert east.as_of == datetime(2026, 12, 1, 9, tzinfo=timezone.utc).timestamp()
    assert book[("us-west-2", "g5.xlarge", "spot")].usd_per_hour == 0.60
    with pytest.raises(PriceError, match=r"spot.json:\d+: Timestamp 'yesterday'"):
        parse(history(("us-east-1a", "g5.xlarge", "0.5", "yesterday")), "spot.json", 0.0)


def test_the_newest_quote_wins_a_merge_so_a_spot_history_moves_a_snapshot_price():
    snapshot = parse(AWS.read_text(), "aws.csv", as_of=1000.0)
    moved = parse(
        history(("us-east-1a", "g5.xlarge", "0.9", "2026-12-01T00:00:00Z")), "spot.json", 0.0
    )
    book = merge([snapshot, moved])
    spot = book[("us-east-1", "g5.xlarge", "spot")]
    assert spot.usd_per_hour == 0.9 and spot.source.startswith("spot.json:")
    assert book[("us-east-1", "g5.xlarge", "on-demand")].usd_per_hour == 1.006
    assert merge([moved, snapshot])[("us-east-1", "g5.xlarge", "spot")].usd_per_hour == 0.9


BOOK = {
    ("us-east-1", "g5.xlarge", "spot"): Quote(0.4, 1000.0, "f:2", 0.25),
    ("us-east-1", "g5.xlarge", "on-demand"): Quote(1.0, 1000.0, "f:2"),
}


def look(**kw):
    args = dict(
        override=None,
        region="us-east-1",
        instance_type="g5.xlarge",
        capacity_type="spot",
        book=BOOK,
        now=2000.0,
        max_age_seconds=3600.0,
        lost_seconds=600.0,
    )
    return resolve(**{**args, **kw})


def test_a_pool_is_priced_by_its_override_else_its_quote_and_an_old_quote_is_flagged():
    assert look(override=0.3).usd_per_hour == 0.3 and look(override=0.3).source == "spec"
    quoted = look()
    assert quoted.usd_per_hour == 0.4 and quoted.source == "f:2" and not quoted.stale
    assert look(now=1000.0 + 3601).stale
    assert look(region="eu-west-1") is None
    on_demand = look(capacity_type="on-demand")
    assert on_demand.expected_usd_per_hour == 1.0 and on_demand.interruptions_per_month is None


def test_expected_price_counts_the_work_each_interruption_throws_away():
    # 25 % of nodes a month = 0.25/730 per hour; each wastes 600 s of paid time.
    assert look().expected_usd_per_hour == pytest.approx(0.4 * (1 + 0.25 / 730 / 6))
    assert look(interruptions_per_month=0.0).expected_usd_per_hour == 0.4  # the pool's own rate
    assert expected_price(1.0, None, 3600) == 1.0


SPOT = gpu_node("t-s", gpus=1, mib=23028, model="A10G", pool="spot", capacity_type="spot")
OD = gpu_node("t-o", gpus=1, mib=23028, model="A10G", pool="od")


def test_spot_whose_interruptions_cost_more_than_its_discount_loses_to_on_demand():
    ask = Pending("job", Ask(memory_mib=20000, capacity_types=frozenset({"spot", "on-demand"})))
    # A job that checkpoints every 12 h on spot interrupted 10 times a month: 0.9 × (1 + 10/730
    # × 12) ≈ 1.05/h expected, against 1.0 on-demand.
    risky = expected_price(0.9, 10.0, 12 * 3600)
    offers = [
        Offer("spot", replace(SPOT, price_per_hour=0.9), 5, risky),
        Offer("od", replace(OD, price_per_hour=1.0), 5),
    ]
    assert plan_scale_up([ask], offers).launches == {"od": 1}
    offers[0] = Offer("spot", replace(SPOT, price_per_hour=0.9), 5)  # no interruption figure
    assert plan_scale_up([ask], offers).launches == {"spot": 1}


OFFER_HEADER = (
    '"SKU","OfferTermCode","RateCode","TermType","PriceDescription","EffectiveDate",'
    '"StartingRange","EndingRange","Unit","PricePerUnit","Currency","Instance Type",'
    '"Region Code","Operating System","Tenancy","Pre Installed S/W","CapacityStatus"'
)


def offer_file(*rows: str) -> str:
    meta = [
        '"FormatVersion","v1.0"',
        '"Disclaimer","This pricing list is for informational purposes only."',
        '"Publication Date","2026-11-28T00:49:39Z"',
        '"Version","20261128004939"',
        '"OfferCode","AmazonEC2"',
    ]
    return "\n".join([*meta, OFFER_HEADER, *rows]) + "\n"


def row(sku: str, term: str, price: str, os: str = "Linux", capacity: str = "Used") -> str:
    return (
        f'"{sku}","JRTCKXETXF","{sku}.JRTCKXETXF.6YS6EN2CT7","{term}","$ per hour","2026-11-01",'
        f'"0","Inf","Hrs","{price}","USD","g5.xlarge","us-east-1","{os}","Shared","NA",'
        f'"{capacity}"'
    )


def test_aws_s_own_offer_file_gives_the_plain_on_demand_linux_hour():
    book = parse(
        offer_file(
            row("A", "OnDemand", "1.0060000000"),
            row("B", "Reserved", "0.6330000000"),  # an RI term: not the on-demand price
            row("C", "OnDemand", "1.1900000000", os="Windows"),
            row("D", "OnDemand", "0.0000000000", capacity="UnusedCapacityReservation"),
        ),
        "ec2.csv",
        as_of=0.0,
    )
    (quote,) = book.values()
    assert book == {("us-east-1", "g5.xlarge", "on-demand"): quote}
    assert quote.usd_per_hour == 1.006 and quote.source == "ec2.csv:7"
    assert quote.as_of == datetime(2026, 11, 28, 0, 49, 39, tzinfo=timezone.utc).timestamp()
    with pytest.raises(PriceError, match=r"ec2.csv:8: PricePerUnit 'n/a' is not a number"):
        parse(offer_file(row("A", "OnDemand", "1"), row("E", "OnDemand", "n/a")), "ec2.csv", 0)
