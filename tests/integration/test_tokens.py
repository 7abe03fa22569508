"""$ per million tokens: tokens a pool's replicas generated (their vLLM counter, scraped by a real
Prometheus) against what the pool cost over the same window."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request

import aiohttp
import pytest

from gpucost.adapters.prometheus import GATEWAY_TOKENS, VLLM_TOKENS, TokenUsage
from gpucost.devcluster.prometheus import PrometheusServer
from tests.integration.conftest import Cluster
from tests.integration.test_demand import _listed, stream
from tests.integration.test_serving import KIND, endpoints, served

REQUESTS, MAX_TOKENS = 10, 50


def tokens_status(cluster: Cluster, namespace: str) -> dict:
    return (cluster.get(KIND, "llm", namespace).get("status") or {}).get("tokens") or {}


def scraped(prometheus: PrometheusServer, namespace: str, counter: str = VLLM_TOKENS) -> bool:
    """Prometheus holds this token counter of the namespace at 0: an increase from here is all
    counted (the replicas' by default)."""
    query = urllib.parse.urlencode({"query": counter})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{query}") as resp:
        result = json.load(resp)["data"]["result"]
    mine = [r for r in result if r["metric"].get("namespace") == namespace]
    return bool(mine) and all(float(r["value"][1]) == 0 for r in mine)


def test_a_pools_cost_per_million_tokens_follows_what_its_replicas_generated(
    cluster, namespace, gpu_pool, serving, prometheus, operator_metrics_port
):
    gpu_pool(nodes=1, gpus=1)
    cluster.apply(served("llm", namespace, 1))
    (target,) = cluster.wait("1 Ready endpoint", lambda: endpoints(serving, namespace, "llm"))
    cluster.wait("the replica scraped", lambda: scraped(prometheus, namespace))

    async def generate() -> int:
        async with aiohttp.ClientSession() as s:
            made = 0
            for i in range(REQUESTS):
                body = {"model": "llm", "prompt": f"request {i}", "max_tokens": MAX_TOKENS}
                async with s.post(f"http://{target}/v1/completions", json=body) as r:
                    made += (await r.json())["usage"]["completion_tokens"]
            return made

    made = asyncio.run(generate())
    assert made == REQUESTS * MAX_TOKENS
    # Prometheus' increase() extrapolates a window's first samples (two samples 1 s apart count
    # double); as scrapes add up it settles on what was generated. A wrong count never settles.
    got = cluster.wait(
        "the pool's status counting the tokens generated",
        lambda: (
            made * 0.9
            <= (t := tokens_status(cluster, namespace)).get("generatedTokens", 0)
            <= made * 1.2
            and t
        ),
        timeout=120,
    )
    assert got["source"] == "vllm" and got["windowSeconds"] == 600
    assert got["cost"] > 0  # the replica's slice of a $4/h node, over the time it ran
    # The same window's cost over its tokens. The status rounds cost to a millionth of a dollar
    # (moving the ratio by up to 0.5e-6 / tokens x 1e6), the tokens to a tenth (up to
    # ratio x 0.05 / tokens) and the figure itself to a millionth.
    tokens = got["generatedTokens"]
    ratio = got["cost"] / tokens * 1e6
    rounding = (0.5 + ratio * 0.05) / tokens + 0.5e-6
    assert got["usdPerMillionTokens"] == pytest.approx(ratio, abs=rounding)
    page = urllib.request.urlopen(f"http://127.0.0.1:{operator_metrics_port}/metrics").read()
    line = f'gpucost_usd_per_million_tokens{{model="llm",namespace="{namespace}",pool="llm"}}'
    assert line in page.decode()


def test_where_the_gateway_serves_a_pool_its_own_count_is_the_one_used(
    cluster, namespace, gpu_pool, serving, gateway, replica_targets, tmp_path
):
    gpu_pool(nodes=1, gpus=1)
    cluster.apply(served("llm", namespace, 1))
    cluster.wait("1 Ready endpoint", lambda: endpoints(serving, namespace, "llm"))
    model = f"{namespace}/llm"
    cluster.wait("the gateway routes the pool", lambda: _listed(gateway.url, model))
    page = urllib.request.urlopen(f"{gateway.url}/metrics").read().decode()
    assert f'namespace="{namespace}",pool="llm"}} 0.0' in page  # at 0 before the first request
    # A Prometheus scraping both the gateway and the replicas, as the chart's monitors do.
    host = gateway.url.removeprefix("http://")
    prom = PrometheusServer(tmp_path / "prometheus", [host], replicas_file=replica_targets)
    prom.start()
    try:
        cluster.wait("the replica scraped", lambda: scraped(prom, namespace))
        cluster.wait(
            "the gateway scraped", lambda: scraped(prom, namespace, GATEWAY_TOKENS), timeout=30
        )
        statuses = asyncio.run(stream(gateway.url, model, REQUESTS, MAX_TOKENS))
        assert statuses == [200] * REQUESTS
        usage = TokenUsage(prom.url, window_seconds=600, every_seconds=0)
        # Both counters hold these tokens; the gateway's is the one taken.
        cluster.wait(
            "the gateway's count taken",
            lambda: (
                (u := (usage.usage(time.time()) or {}).get((namespace, "llm")))
                and u.source == "gateway"
                and made_within(u.tokens, REQUESTS * MAX_TOKENS)
            ),
            timeout=90,
        )
    finally:
        prom.stop()


def made_within(counted: float, made: int) -> bool:
    return made * 0.9 <= counted <= made * 1.2
