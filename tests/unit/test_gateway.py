"""The gateway against simulated vLLM replicas on 127.0.0.1: routing, holding, errors."""

import asyncio
import json

import aiohttp
from aiohttp import web

from gpucost.core.routing import HoldQueue
from gpucost.devcluster.vllmsim import Server, Sizing
from gpucost.gateway import MAX_BODY, Gateway, PoolLoad, Route, streamed_tokens

A100 = 81920


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def replica(load_s: float = 0) -> tuple[web.AppRunner, str, Server]:
    server = Server(
        Sizing.from_args(["--served-model-name", "llm"], A100, A100, None), "A100", load_s
    )
    runner, address = await start(server.app)
    server.start_engine()
    return runner, address, server


class Harness:
    def __init__(self, endpoints, **route):
        self.route = Route("ns", "llm", "llm", list(endpoints), **route)
        self.signals: list[dict] = []

        async def signal(route: Route, load: PoolLoad) -> None:
            self.signals.append(load.wire(0))

        self.gateway = Gateway(
            lambda m: self.route if m in ("llm", "ns/llm") else None, lambda: ["llm"], signal
        )

    async def __aenter__(self):
        self.runner, self.address = await start(self.gateway.app)
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_):
        await self.session.close()
        await self.runner.cleanup()

    async def post(self, body, path="/v1/completions"):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        async with self.session.post(f"http://{self.address}{path}", data=data) as r:
            return r.status, await r.text(), r.headers


BODY = {"model": "llm", "prompt": "hello", "max_tokens": 4}


def run(coro):
    return asyncio.run(coro)


async def until(check, timeout: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_requests_are_answered_streamed_and_not_and_bad_input_gets_openai_errors():
    async def go():
        upstream, address, _ = await replica()
        async with Harness([address]) as h:
            status, text, _ = await h.post(BODY)
            assert status == 200 and json.loads(text)["usage"]["completion_tokens"] == 4
            chat = {"model": "llm", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            status, text, _ = await h.post({**chat, "max_tokens": 3}, "/v1/chat/completions")
            assert status == 200 and text.endswith("data: [DONE]\n\n")
            status, text, _ = await h.post({**BODY, "model": "ns/llm"})  # sent on as "llm"
            assert status == 200 and json.loads(text)["model"] == "llm"
            status, text, _ = await h.post({**BODY, "model": "nope"})
            assert status == 404 and json.loads(text)["error"]["code"] == "model_not_found"
            status, text, _ = await h.post(b"{not json")
            assert status == 400 and "error" in json.loads(text)
            status, text, _ = await h.post(b"x" * (MAX_BODY + 1))
            assert status == 413 and "error" in json.loads(text)
            async with h.session.get(f"http://{h.address}/metrics") as r:
                metrics = await r.text()
        await upstream.cleanup()
        return metrics

    metrics = run(go())
    assert 'gpucost_gateway_requests_total{code="200",namespace="ns",pool="llm"} 3.0' in metrics
    assert 'gpucost_gateway_generated_tokens_total{namespace="ns",pool="llm"} 11.0' in metrics


def test_the_least_busy_replica_gets_the_next_request():
    async def go():
        a_runner, a, _ = await replica()
        b_runner, b, b_server = await replica()
        async with Harness([a, b]) as h:
            h.gateway.in_flight[a] = 3  # as if three long requests were on a
            await h.post(BODY)
            await h.post(BODY)
            served_b = b_server.served
        await a_runner.cleanup()
        await b_runner.cleanup()
        return served_b

    assert run(go()) == 2


def test_a_request_to_a_pool_with_no_ready_replica_is_held_signalled_and_answered():
    async def go():
        upstream, address, _ = await replica()
        async with Harness([], hold_timeout_s=30) as h:
            held = asyncio.create_task(h.post(BODY))
            await until(lambda: h.signals)
            assert h.signals[0]["held"] == 1  # the operator is told at once
            h.route.endpoints.append(address)  # the pool woke up
            await h.gateway.endpoints_changed()
            status, text, _ = await held
        await upstream.cleanup()
        return status, text

    status, text = run(go())
    assert status == 200 and json.loads(text)["usage"]["completion_tokens"] == 4


def test_the_cold_start_is_measured_from_the_first_held_request_to_its_first_token():
    async def go():
        upstream, address, _ = await replica()
        async with Harness([], hold_timeout_s=30) as h:
            held = asyncio.create_task(h.post(BODY))
            await until(lambda: h.signals)
            await asyncio.sleep(0.3)
            h.route.endpoints.append(address)
            await h.gateway.endpoints_changed()
            await held
            return h.gateway.loads[("ns", "llm")].cold_start

    assert 0.3 <= run(go()) < 5


def test_hold_timeout_and_a_full_hold_queue_answer_503_with_retry_after():
    async def go():
        async with Harness([], hold_timeout_s=0.3, hold_queue=1) as h:
            first = asyncio.create_task(h.post(BODY))
            await until(lambda: h.signals)
            full = await h.post(BODY)  # the queue of one is taken
            timed_out = await first
        return full, timed_out

    full, timed_out = run(go())
    for status, text, headers in (full, timed_out):
        assert status == 503 and headers["Retry-After"] and "error" in json.loads(text)


def test_a_client_that_goes_away_frees_its_replica_slot_at_once():
    async def go():
        upstream, address, server = await replica()
        async with Harness([address]) as h:
            long = {**BODY, "max_tokens": 100000, "stream": True}
            async with h.session.post(f"http://{h.address}/v1/completions", json=long) as r:
                await r.content.readline()  # the first token arrived: it is running
                assert h.gateway.in_flight[address] == 1
            # the response was closed unread: the client went away
            for _ in range(200):
                if h.gateway.in_flight[address] == 0 and not server.engine.running:
                    break
                await asyncio.sleep(0.01)
            freed = (h.gateway.in_flight[address], len(server.engine.running))
        await upstream.cleanup()
        return freed

    assert run(go()) == (0, 0)


def test_a_streamed_answer_is_counted_by_its_usage_chunk_when_it_has_one():
    usage = b'data: {"choices": [], "usage": {"completion_tokens": 40}}\n\ndata: [DONE]\n\n'
    assert streamed_tokens(6, b'data: {"choices": [{"text": " a b"}]}\n\n' + usage) == 40
    assert streamed_tokens(6, b'data: {"choices": [{"text": " a"}]}\n\ndata: [DONE]\n\n') == 6
    assert streamed_tokens(2, b'data: {"usage": "mangled"}\n\n') == 2


def test_past_max_concurrency_requests_wait_at_the_gateway_for_the_first_slot_that_frees():
    async def go():
        upstream, address, server = await replica()
        async with Harness([address], max_in_flight=1, hold_timeout_s=30) as h:
            long = {**BODY, "max_tokens": 200, "stream": True}
            first = asyncio.create_task(h.post(long))
            await until(lambda: h.gateway.in_flight[address] == 1)
            second = asyncio.create_task(h.post(BODY))
            await until(lambda: h.signals)  # held (demand), not sent to the busy replica
            assert h.gateway.in_flight[address] == 1 and len(server.engine.running) == 1
            assert h.signals[-1]["held"] == 1
            answers = [await first, await second]  # the slot the first frees goes to it
            held = h.gateway.loads[("ns", "llm")].held
        await upstream.cleanup()
        return answers, held

    answers, held = run(go())
    assert [status for status, _, _ in answers] == [200, 200] and held == 0


def test_replicas_that_refuse_the_connection_or_are_still_loading_are_skipped():
    async def go():
        upstream, address, server = await replica()
        loading_runner, loading, _ = await replica(load_s=60)  # answers 503 while it loads
        gone_runner, gone = await start(web.Application())
        await gone_runner.cleanup()  # its port no longer listens: a replica just deleted
        async with Harness([gone, loading, address]) as h:
            h.gateway.in_flight[address] = 5  # the busy one: the other two are tried first
            answer = await h.post(BODY)
            async with h.session.get(f"http://{h.address}/metrics") as r:
                metrics = await r.text()
        await upstream.cleanup()
        await loading_runner.cleanup()
        return answer, server.served, metrics

    (status, text, _), served, metrics = run(go())
    assert status == 200 and json.loads(text)["usage"]["completion_tokens"] == 4 and served == 1
    assert 'gpucost_gateway_retried_total{namespace="ns",pool="llm"} 2.0' in metrics


def test_held_requests_still_able_to_meet_the_objective_go_before_those_past_it():
    def held(arrivals: list[float]) -> HoldQueue[int]:
        queue: HoldQueue[int] = HoldQueue()
        for i, arrived in enumerate(arrivals):
            queue.add(i, arrived)
        return queue

    arrived = [1.0, 5.0, 9.0, 9.5]  # at now=10 with a 2 s objective: 2 and 3 can still meet it
    assert list(held(arrived).in_order(10.0, 2.0)) == [2, 3, 0, 1]
    assert list(held(arrived).in_order(10.0, None)) == [0, 1, 2, 3]  # no objective: oldest first
    assert list(held(arrived).in_order(10.0, 60.0)) == [0, 1, 2, 3]
    queue = held(arrived)
    assert list(queue.in_order(10.0, 2.0)) == [2, 3, 0, 1]
    queue.discard(2)
    queue.add(4, 11.0)
    # later, 3 is past the objective too: it goes after 0 and 1, which passed it first
    assert list(queue.in_order(11.8, 2.0)) == [4, 0, 1, 3]
    assert list(queue.in_order(11.8, None)) == [0, 1, 3, 4]  # the objective unset: oldest first
    queue.discard(0)
    queue.discard(7)  # not held: nothing happens
    assert len(queue) == 3


def test_a_freed_slot_goes_to_a_fresh_request_before_a_backlog_past_the_ttft_objective():
    async def first_token(h: Harness, body: dict) -> float:
        async with h.session.post(f"http://{h.address}/v1/completions", json=body) as r:
            await r.content.readline()
            at = asyncio.get_running_loop().time()
            await r.read()
            return at

    async def go(objective: float | None) -> tuple[float, float]:
        upstream, address, _ = await replica()
        route = {"max_in_flight": 1, "hold_timeout_s": 30, "ttft_objective_s": objective}
        async with Harness([address], **route) as h:
            load = h.gateway.loads[("ns", "llm")]
            small = {**BODY, "stream": True}
            long = {**BODY, "max_tokens": 100000, "stream": True}
            async with h.session.post(f"http://{h.address}/v1/completions", json=long) as r:
                await r.content.readline()  # the one slot is taken
                old = asyncio.create_task(first_token(h, small))
                await until(lambda: load.held == 1)
                await asyncio.sleep(0.3)  # the held request ages past a 0.2 s objective
                new = asyncio.create_task(first_token(h, small))
                await until(lambda: load.held == 2)
            # the long request's client went away: its slot is granted to one of the two
            times = (await old, await new)
        await upstream.cleanup()
        return times

    old, new = run(go(0.2))
    assert new < old  # the fresh request first: the old one had missed the objective anyway
    old, new = run(go(None))
    assert old < new  # without an objective, oldest first
