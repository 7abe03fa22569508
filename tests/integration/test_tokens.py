"""$ per million tokens: tokens a pool's replicas generated (their vLLM counter, scraped by a real
Prometheus) against what the pool cost over the same window."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request

import aiohttp
import pytest

from gpucost.adapters.prometheus import VLLM_TOKENS
from gpucost.devcluster.prometheus import PrometheusServer
from tests.integration.conftest import Cluster
from tests.integration.test_serving import KIND, endpoints, served

REQUESTS, MAX_TOKENS = 10, 50


def tokens_status(cluster: Cluster, namespace: str) -> dict:
    return (cluster.get(KIND, "llm", namespace).get("status") or {}).get("tokens") or {}


def scraped(prometheus: PrometheusServer, namespace: str) -> bool:
    """Prometheus holds the replica's token counter at 0: an increase from here is all counted."""
    query = urllib.parse.urlencode(
        {"query": VLLM_TOKENS.replace("}", f',namespace="{namespace}"}}')}
    )
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{query}") as resp:
        result = json.load(resp)["data"]["result"]
    return bool(result) and all(float(r["value"][1]) == 0 for r in result)


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
    # The same window's cost over its tokens (the status rounds cost to a millionth of a dollar).
    ratio = got["cost"] / got["generatedTokens"] * 1e6
    assert got["usdPerMillionTokens"] == pytest.approx(ratio, rel=1e-3)
    page = urllib.request.urlopen(f"http://127.0.0.1:{operator_metrics_port}/metrics").read()
    line = f'gpucost_usd_per_million_tokens{{model="llm",namespace="{namespace}",pool="llm"}}'
    assert line in page.decode()
