"""Replicas follow demand through the gateway: a pool at zero wakes for a held request (which is
answered, not dropped), grows under load, and goes back to zero when quiet."""

from __future__ import annotations

import asyncio
import json
import random
import signal

import aiohttp
import pytest

from tests.integration.conftest import Cluster
from tests.integration.test_kill import Killer
from tests.integration.test_serving import KIND, served

pytestmark = pytest.mark.integration


def autoscaled(namespace: str, **autoscaling) -> dict:
    body = served("llm", namespace, 0)
    body["spec"]["autoscaling"] = {
        "minReplicas": 0,
        "maxReplicas": 3,
        "target": 2,
        "scaleToZeroAfter": "15s",
        "holdTimeout": "90s",
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
        **autoscaling,
    }
    return body


def replicas(cluster: Cluster, namespace: str) -> int:
    return int(cluster.get(KIND, "llm", namespace)["spec"]["replicas"])


async def stream(url: str, model: str, n: int, max_tokens: int) -> list[int]:
    body = {"model": model, "prompt": "hello " * 40, "max_tokens": max_tokens, "stream": True}
    async with aiohttp.ClientSession() as s:

        async def one() -> int:
            async with s.post(f"{url}/v1/completions", json=body) as r:
                text = await r.text()
                return r.status if text.endswith("data: [DONE]\n\n") else -r.status

        return await asyncio.gather(*(one() for _ in range(n)))


def test_a_pool_at_zero_wakes_for_a_held_request_grows_under_load_and_returns_to_zero(
    cluster, namespace, gpu_pool, serving, gateway
):
    gpu_pool(nodes=1, gpus=1)
    cluster.apply(autoscaled(namespace))
    model = f"{namespace}/llm"  # other tests' pools are called llm too: the qualified name
    cluster.wait("the gateway sees the pool", lambda: _listed(gateway.url, model))
    assert replicas(cluster, namespace) == 0
    # one request to a pool at zero: held, the pool wakes, the request is answered
    assert asyncio.run(stream(gateway.url, model, 1, 4)) == [200]
    status = cluster.wait(
        "the cold start reported",
        lambda: (
            (s := cluster.get(KIND, "llm", namespace)["status"]["autoscaling"]).get(
                "lastColdStartSeconds"
            )
            and s
        ),
    )
    assert status["desiredReplicas"] >= 1 and 0 < status["lastColdStartSeconds"] < 60
    # six long streams at a target of 2 per replica: up to 3 replicas (the max)
    load = asyncio.run(_load_while(cluster, namespace, gateway.url, model))
    assert load["codes"] == [200] * 6 and load["peak"] == 3
    # what a warm replica would cost: 20000 of the node's 81920 MiB at $4.00/h (the pool's cost
    # and its replica count are written by different passes: wait for them to agree)
    cluster.wait(
        "the replica's price in the status",
        lambda: (
            abs(
                cluster.get(KIND, "llm", namespace)["status"]["autoscaling"]["replicaCostPerHour"]
                - 4.0 * 20000 / 81920
            )
            < 0.01
        ),
    )
    # quiet: down, then to zero after scaleToZeroAfter
    cluster.wait("back to zero", lambda: replicas(cluster, namespace) == 0, timeout=90)
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=llm",
        "-o", "jsonpath={.items[*].reason}",
    ).stdout.split()  # fmt: skip
    assert "ScaledUp" in events and "ScaledDown" in events


async def _load_while(cluster: Cluster, namespace: str, url: str, model: str) -> dict:
    # long enough (about 10 s of decode) to outlast a busy machine's gateway flush, operator
    # look and pod start: 400 tokens took under a second and ended before the pool grew
    task = asyncio.create_task(stream(url, model, 6, 6000))
    peak = 0
    while not task.done():
        peak = max(peak, await asyncio.to_thread(replicas, cluster, namespace))
        await asyncio.sleep(0.3)
    return {"codes": await task, "peak": peak}


def _listed(url: str, model: str) -> bool:
    async def models() -> list[str]:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/models") as r:
            return [m["id"] for m in (await r.json())["data"]]

    return model in asyncio.run(models())


def test_an_hpa_on_the_same_pool_is_reported_not_fought(cluster, namespace, gpu_pool):
    gpu_pool(nodes=1, gpus=1)
    cluster.apply(autoscaled(namespace, minReplicas=1))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "theirs", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "gpucost.dev/v1alpha1", "kind": "InferencePool",
                               "name": "llm"},
            "minReplicas": 1,
            "maxReplicas": 2,
        },
    }  # fmt: skip
    cluster.apply(hpa)
    cluster.wait(
        "the conflict reported",
        lambda: "theirs" in json.dumps(
            (cluster.get(KIND, "llm", namespace)["status"] or {}).get("autoscaling", {})
        ),
    )  # fmt: skip


def test_a_gateway_stopped_mid_hold_still_answers_the_request_it_accepted(
    cluster, namespace, gpu_pool, serving, gateway
):
    gpu_pool(nodes=1, gpus=1)
    body = autoscaled(namespace)
    body["spec"]["env"] = [
        {"name": "SIM_WEIGHTS_MIB", "value": "2000"},
        {"name": "SIM_LOAD_SECONDS", "value": "4"},  # a cold start long enough to stop within
    ]
    cluster.apply(body)
    model = f"{namespace}/llm"
    cluster.wait("the gateway sees the pool", lambda: _listed(gateway.url, model))

    async def held_then_stopped() -> list[int]:
        request = asyncio.create_task(stream(gateway.url, model, 1, 4))
        await asyncio.to_thread(
            cluster.wait, "the pool woken", lambda: replicas(cluster, namespace) >= 1
        )
        gateway.proc.send_signal(signal.SIGTERM)  # a gateway rollout, mid-hold
        return await request

    assert asyncio.run(held_then_stopped()) == [200]
    assert gateway.proc.wait(timeout=60) == 0
    assert "drained" in gateway.log.read_text()


def test_kv_cache_use_scraped_by_prometheus_from_the_replicas_drives_the_pool(
    cluster, namespace, gpu_pool, serving, gateway, prometheus
):
    gpu_pool(nodes=1, gpus=1)
    body = autoscaled(namespace, minReplicas=1, metric="kvCacheUsage", target=0.1)
    body["spec"]["replicas"] = 1
    # 17000 MiB of weights leave ~940 MiB of KV cache in the 20000 MiB slice: six long streams
    # fill a good part of it
    body["spec"]["env"] = [
        {"name": "SIM_WEIGHTS_MIB", "value": "17000"},
        {"name": "SIM_LOAD_SECONDS", "value": "1"},
    ]
    cluster.apply(body)
    model = f"{namespace}/llm"
    cluster.wait("1 replica", lambda: replicas(cluster, namespace) == 1, timeout=60)
    cluster.wait("the gateway sees its endpoint", lambda: _listed(gateway.url, model))

    async def loaded() -> int:
        task = asyncio.create_task(stream(gateway.url, model, 6, 1200))
        peak = 1
        while not task.done():
            peak = max(peak, await asyncio.to_thread(replicas, cluster, namespace))
            await asyncio.sleep(0.3)
        assert await task == [200] * 6
        return peak

    assert asyncio.run(loaded()) >= 2
    reason = cluster.get(KIND, "llm", namespace)["status"]["autoscaling"]
    assert reason["load"] is not None


def test_an_operator_killed_while_a_pool_wakes_and_grows_loses_no_request(
    cluster, operator, namespace, gpu_pool, serving, gateway
):
    # one replica a node, no node yet: the wake and the growth each need a node bought
    gpu_pool(
        0, gpus=1, memory_mib=24000, minNodes=0, maxNodes=3, idleTimeout="30s",
        provider={"kind": "kwok", "bootDelay": "1s"},
    )  # fmt: skip
    cluster.apply(autoscaled(namespace))
    model = f"{namespace}/llm"
    cluster.wait("the gateway sees the pool", lambda: _listed(gateway.url, model))
    killer = Killer(operator, random.Random(7))

    async def load_while_killed() -> list[int]:
        # six streams of ~20 s at a target of 2 a replica: held at zero, then 3 replicas; a
        # restart that forgot the demand would scale in under them and cut their streams
        task = asyncio.create_task(stream(gateway.url, model, 6, 12000))
        await asyncio.to_thread(killer.kill_for, 8, 4)  # from the wake into the growth
        await asyncio.to_thread(
            cluster.wait, "grown to the load's 3", lambda: replicas(cluster, namespace) == 3
        )
        return await task

    assert asyncio.run(load_while_killed()) == [200] * 6
