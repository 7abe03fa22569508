"""The simulated vLLM server (the dev harness's one fake) keeps vLLM's surface and its figures."""

import asyncio
import csv
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gpucost.core.engine import MIB
from gpucost.devcluster.vllmsim import Server, Sizing, StartError

PERF = Path(__file__).resolve().parents[3] / "shared" / "data" / "vllm-perf" / "perf.csv"
A100 = 81920


def test_refuses_to_start_when_its_memory_flags_exceed_its_slice():
    with pytest.raises(StartError, match="less than desired GPU memory utilization"):
        Sizing.from_args(["--gpu-memory-utilization", "0.95"], 20000, A100, None)
    kv = str(8000 * MIB)
    with pytest.raises(StartError, match="does not fit"):
        Sizing.from_args(["--kv-cache-memory-bytes", kv], 20000, A100, 15316)
    ok = Sizing.from_args(["--gpu-memory-utilization", "0.244"], 20000, A100, None)
    assert ok.kv_tokens > 10_000  # ~2.6 GB of KV left after 8B weights and overhead


def test_decode_step_matches_the_published_a100_figure():
    """perf.csv: Llama-3-8B bf16 on A100-80GB, 10 prompts, median TPOT."""
    rows = [
        r
        for r in csv.DictReader(PERF.open())
        if r["gpu"] == "A100-80GB-SXM"
        and r["model"] == "Llama-3-8B-Instruct"
        and r["metric"] == "tpot_median"
        and r["concurrency_or_rate"].startswith("10 ")
    ]
    measured = float(rows[0]["value"]) / 1000
    sizing = Sizing.from_args([], A100, A100, None)
    step = Server(sizing, "NVIDIA-A100-SXM4-80GB", 0).engine.step_seconds(10, 0)
    assert 0.8 < step / measured < 1.2, (step, measured)


async def _serve(server: Server):
    runner = web.AppRunner(server.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.start_engine()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def test_serves_openai_completions_streamed_and_not_with_vllm_metrics():
    async def run():
        sizing = Sizing.from_args(["--served-model-name", "m"], A100, A100, None)
        server = Server(sizing, "NVIDIA-H100-80GB-HBM3", 0)
        runner, url = await _serve(server)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/health") as r:
                assert r.status == 200
            async with s.get(f"{url}/v1/models") as r:
                assert [m["id"] for m in (await r.json())["data"]] == ["m"]
            body = {"model": "m", "prompt": "hello " * 100, "max_tokens": 5}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                done = await r.json()
            assert done["usage"]["completion_tokens"] == 5 and done["usage"]["prompt_tokens"] == 150
            chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            async with s.post(f"{url}/v1/chat/completions", json={**chat, "max_tokens": 3}) as r:
                lines = [x for x in (await r.text()).split("\n\n") if x]
            assert lines[-1] == "data: [DONE]" and len(lines) == 4
            assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
            async with s.post(f"{url}/v1/completions", json={**body, "model": "x"}) as r:
                assert r.status == 404 and (await r.json())["type"] == "NotFoundError"
            async with s.get(f"{url}/metrics") as r:
                text = await r.text()
        await runner.cleanup()
        return text

    text = asyncio.run(run())
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:generation_tokens_total",
    ):
        assert name in text, name
    assert 'vllm:generation_tokens_total{engine="0",model_name="m"} 8.0' in text


def test_health_is_503_while_the_model_loads():
    async def run():
        server = Server(Sizing.from_args([], A100, A100, None), "A100", 60)
        runner, url = await _serve(server)
        async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
            status = r.status
        await runner.cleanup()
        return status

    assert asyncio.run(run()) == 503


def test_a_compressed_clock_batches_tokens_per_event_and_reports_usage_at_the_end():
    """What a time-compressed replay needs: engine time runs ``speedup`` times faster than the
    wall, several tokens go in one event, and the usage chunk counts them all."""

    async def run():
        sizing = Sizing.from_args(["--served-model-name", "m"], A100, A100, None)
        server = Server(sizing, "NVIDIA-A100-SXM4-80GB", 0, speedup=50, stream_tokens=8)
        runner, url = await _serve(server)
        body = {
            "model": "m",
            "prompt": "hello " * 100,
            "max_tokens": 100,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as s:
            started = loop.time()
            async with s.post(f"{url}/v1/completions", json=body) as r:
                events = [x for x in (await r.text()).split("\n\n") if x]
            wall = loop.time() - started
        await runner.cleanup()
        return events, wall, server.engine.step_seconds(1, 0) * 100

    events, wall, engine_time = asyncio.run(run())
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2][6:])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 100
    texts = [json.loads(e[6:])["choices"][0]["text"] for e in events[:-2]]
    assert texts[0] == " tok1" and "".join(texts).split() == [f"tok{i}" for i in range(1, 101)]
    assert len(texts) == 1 + 99 // 8 + 1  # the first token alone, then 8 at a time
    assert wall < engine_time / 5, (wall, engine_time)  # 50x faster, with a wide margin
