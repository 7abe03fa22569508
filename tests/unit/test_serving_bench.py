"""bench/serving.py's arithmetic: the trace as read, the fixed run's sizing, and a run's figures
from hand-made records (SLO, warm and cold requests, node-hours, $ per 1M tokens)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("serving_bench", ROOT / "bench" / "serving.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["serving_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _bench()
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_the_trace_is_read_in_arrival_order_from_its_first_request(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(
        HEADER
        + "2023-11-16 18:15:50.9951690,396,109\n"
        + "2023-11-16 18:15:46.6805900,374,44\n"
        + "2023-11-16 18:17:46.6805900,10,5\n"
    )
    reqs = bench.load_trace(trace)
    assert [(round(r.at, 4), r.prompt, r.output) for r in reqs] == [
        (0.0, 374, 44),
        (4.3146, 396, 109),
        (120.0, 10, 5),
    ]
    assert len(bench.load_trace(trace, minutes=1)) == 2
    both = bench.two_passes(reqs)
    assert len(both) == 6 and both[3].at == 120.0 + bench.GAP_S  # the gap is fixed


def test_a_bad_trace_row_names_its_file_and_line(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47,lots,3\n")
    with pytest.raises(bench.TraceError, match=rf"{trace}:3: "):
        bench.load_trace(trace)
    trace.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,1\n")
    with pytest.raises(bench.TraceError, match="missing column.*GeneratedTokens"):
        bench.load_trace(trace)


def test_the_fixed_run_is_sized_for_the_busiest_minute_and_the_oracle_follows_each_minute():
    # 30 in flight for one minute, 6 for the next nine: the peak minute is 30
    series = [30.0] * 60 + [6.0] * 540
    assert bench.peak_minute(series) == 30.0
    fixed = math.ceil(bench.peak_minute(series) / 12)
    assert fixed == 3
    # the oracle: 3 replicas for a minute, then 1 for nine: 12 replica-minutes
    assert bench.oracle_replica_hours(series, 12) == pytest.approx(12 / 60)


def test_service_time_is_the_simulators_prefill_and_decode_on_an_a10g():
    engine = bench._engine()
    seconds = bench.service_seconds(1000, 200, 12)
    assert seconds == pytest.approx(1000 * engine.prefill + 200 * engine.step_seconds(12, 0))
    assert 5 < seconds < 15  # 8B weights read once a step at A10G bandwidth: ~40 ms a token


def test_the_gateway_holds_what_a_replicas_kv_cache_cannot():
    # 1680 blocks of 16 tokens on an A10G with 8B bf16 weights; requests of 1000 + 200 tokens
    reqs = [bench.Req(0, 1000, 200), bench.Req(1, 900, 300)]
    assert bench.kv_concurrency(reqs) == bench._engine().blocks * 16 // 1200 == 22


def test_a_runs_figures_from_its_records_timeline_and_node_spans():
    reqs = [bench.Req(0, 100, 10), bench.Req(1, 100, 10), bench.Req(2, 100, 10)]
    records = [
        bench.Record(sent=100.0, ttft=0.05, done=101.0, status=200, tokens=10),  # 1 s trace
        bench.Record(sent=100.5, ttft=0.5, done=102.0, status=200, tokens=10),  # 10 s: cold
        bench.Record(sent=103.0, ttft=None, done=103.1, status=503, tokens=0, error="held"),
    ]
    timeline = bench.Timeline(
        samples=[
            bench.Sample(100.2, 0, 1, 1),  # no Ready replica from 100.2 to 101
            bench.Sample(101.0, 1, 1, 1),
            bench.Sample(102.0, 1, 2, 2),
        ],
        nodes={"a": [90.0, 110.0], "b": [102.0, 104.0]},
        pools={"a": "bench", "b": "bench-spot"},
    )
    price = bench.Prices(on_demand=1.0, spot=0.5, spot_interruptions_per_month=0.25)
    out = bench.summarize(reqs, records, timeline, (100.0, 103.1), price, 20.0, 2.0)
    assert out["dropped"] == 1 and out["generated_tokens"] == 20
    assert out["slo_attainment"] == pytest.approx(1 / 3, abs=1e-4)  # of all requests
    assert out["cold_requests"] == 1
    assert out["warm_misses_by_minute"] == {1: 1}  # the 503, sent 3 s in: trace minute 1
    assert out["slo_attainment_warm"] == pytest.approx(1 / 2, abs=1e-4)
    assert out["cold_start_s"] == 10.0  # the first request of the cold span, in trace time
    # node a 3.1 s on-demand ($1/h) and node b 1.1 s on spot ($0.5/h) inside the window, x20
    assert out["node_hours"] == pytest.approx(4.2 * 20 / 3600, abs=1e-4)
    assert out["spot_node_hours"] == pytest.approx(1.1 * 20 / 3600, abs=1e-4)
    usd = (3.1 + 1.1 * 0.5) * 20 / 3600
    assert out["usd_per_million_tokens"] == pytest.approx(usd / 20 * 1e6, rel=1e-3)
    assert out["max_replicas"] == 2 and out["max_nodes"] == 2


def test_the_autoscaling_specs_compress_their_windows_and_the_baseline_never_reaches_zero():
    from gpucost.api.inferencepool import InferencePoolSpec

    ours = bench.autoscaling("gpucost", 12, 5, 20, 2.0)
    assert ours["minReplicas"] == 0 and ours["scaleToZeroAfter"] == "30s"  # 10 min / 20
    assert ours["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 15  # 300 s / 20
    assert ours["maxReplicas"] == 10  # twice the fixed run's
    baseline = bench.autoscaling("baseline", 12, 5, 20, 2.0)
    assert baseline["minReplicas"] == 1
    assert baseline["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 0
    fixed = bench.autoscaling("fixed", 12, 5, 20, 2.0)
    assert fixed["minReplicas"] == fixed["maxReplicas"] == 5  # pinned
    for kind in bench.RUNS:  # each is a valid InferencePool, with the same hold settings
        spec = bench.autoscaling(kind, 12, 5, 20, 2.0)
        assert spec["ttftObjective"] == "100ms" and spec["holdTimeout"] == "45s"  # 2 s, 900 s
        body = bench.inference_pool(kind, "ns", 1, spec, 20, 19)
        parsed = InferencePoolSpec.model_validate(body["spec"])
        assert parsed.max_concurrency == 19
        spot = kind == "gpucost"  # only gpucost may buy spot
        assert ("spot" in parsed.capacity_types) == spot
    base = bench.inference_pool("gpucost", "ns", 1, spec, 20, 19, base=1)["spec"]
    assert InferencePoolSpec.model_validate(base).base_size(3) == 1


def test_the_pools_prices_are_the_instances_on_demand_and_spot_rows(tmp_path):
    prices = tmp_path / "prices.csv"
    head = "instance_type,region,ondemand_usd_hr,spot_avg_usd_hr,spot_interrupt_freq\n"
    rows = [f"{bench.INSTANCE},eu-west-1,9,9,<5%", f"{bench.INSTANCE},{bench.REGION},1.2,0.4,5-10%"]
    prices.write_text(head + "\n".join(rows) + "\n")
    price = bench.prices(prices)
    assert (price.on_demand, price.spot, price.spot_interruptions_per_month) == (1.2, 0.4, 0.075)
    assert price.of("bench-spot") == 0.4 and price.of("bench") == 1.2
    spot = bench.node_pool("bench-spot", 20, price, 8)["spec"]
    assert spot["capacityType"] == "spot" and spot["interruptionsPerMonth"] == 0.075
