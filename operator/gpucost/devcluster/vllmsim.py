"""A vLLM-compatible simulated server, for replicas on machines without a GPU (the dev harness's
one fake; never in the operator image).

Same surface as ``vllm serve``: OpenAI ``/v1/completions`` and ``/v1/chat/completions``
(streaming or not), ``/v1/models``, ``/health`` and ``/metrics`` with vLLM's metric names. Its
speed is a loop of engine steps as ``../shared/data/vllm-perf/README.md`` §7 describes: a step
costs α (weights read once, bandwidth-bound) + β per running sequence + prefill per token, with
the bandwidth of the GPU it runs on (§6); its KV cache is what its memory flags leave after the
weights (§3), and it refuses to start, as vLLM does, when those flags ask for more than its slice.

Two knobs exist for replaying hours of traffic in minutes (``bench/serving.py``): ``speedup``
runs the engine's clock that many times faster than the wall (its metrics stay in engine time),
and ``stream_tokens`` sends up to that many tokens per streamed event after the first, as vLLM's
``--stream-interval`` does, so a compressed replay is not a flood of one-token events.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gpucost.core.engine import MIB, OVERHEAD_MIB, flag_value

BANDWIDTH_GBS = {"L4": 300, "A10G": 600, "A100-SXM4-40GB": 1500, "A100": 2000, "H100": 3350}
"""GPU memory bandwidth (GB/s), vllm-perf §6; matched by substring of nvidia.com/gpu.product,
most specific first. H200 is 4,800."""
EFFICIENCY = 0.7
"""Share of peak bandwidth a small-batch decode step reaches (50-77 % measured, §6)."""
BETA_H100_S = 0.05e-3
"""Per running sequence, seconds, on H100 (§7); scaled by bandwidth for other GPUs."""
PREFILL_H100_TOKENS_S = 40_000
KV_BYTES_PER_TOKEN = 131_072  # Llama-3.1-8B: 32 layers x 8 KV heads x 128 x 2 x bf16 (§2)
BLOCK = 16
MAX_NUM_SEQS = 256
STEP_TOKENS = 2048
API_OVERHEAD_S = 0.02
DEFAULT_WEIGHTS_MIB = 15_316  # Llama-3.1-8B bf16, 16.06 GB


class StartError(Exception):
    """What vLLM would print before exiting at start-up."""


def bandwidth(product: str) -> float:
    if "H200" in product:
        return 4800e9
    for key, gbs in BANDWIDTH_GBS.items():
        if key in product:
            return gbs * 1e9
    return 2000e9


@dataclass(frozen=True)
class Sizing:
    """What the replica was given and what that leaves for the KV cache."""

    slice_mib: int
    gpu_mib: int
    kv_tokens: int
    weights_mib: int
    served_name: str

    @classmethod
    def from_args(cls, args: Sequence[str], slice_mib: int, gpu_mib: int, weights_mib: int | None):
        weights = weights_mib or DEFAULT_WEIGHTS_MIB
        given = flag_value(args, ["--gpu-memory-utilization"])
        util = float(given or 0.9)
        kv_flag = flag_value(args, ["--kv-cache-memory-bytes"])
        # With --kv-cache-memory-bytes vLLM ignores the (default) utilization.
        if (kv_flag is None or given is not None) and util * gpu_mib > slice_mib + 1:
            raise StartError(
                f"ValueError: Free memory on device ({slice_mib} MiB in this replica's slice) is "
                f"less than desired GPU memory utilization ({util}, {util * gpu_mib:.0f} MiB)"
            )
        if kv_flag is not None:
            kv_mib = int(kv_flag) / MIB
            if kv_mib + weights + OVERHEAD_MIB > slice_mib + 1:
                raise StartError(
                    f"torch.OutOfMemoryError: --kv-cache-memory-bytes {kv_flag} with "
                    f"{weights} MiB of weights does not fit a {slice_mib} MiB slice"
                )
        else:
            kv_mib = util * gpu_mib - weights - OVERHEAD_MIB
        if kv_mib <= 0:
            raise StartError(
                f"ValueError: No available memory for the cache blocks ({slice_mib} MiB slice, "
                f"{weights} MiB of weights)"
            )
        name = flag_value(args, ["--served-model-name"]) or flag_value(args, ["--model"])
        tokens = int(kv_mib * MIB // KV_BYTES_PER_TOKEN)
        return cls(slice_mib, gpu_mib, tokens, weights, name or "model")


@dataclass
class Request:
    prompt_tokens: int
    max_tokens: int
    arrived: float
    prefilled: int = 0
    generated: int = 0
    first_token_at: float | None = None
    tokens: asyncio.Queue = field(default_factory=asyncio.Queue)
    unsent: int = 0
    """Tokens generated but not yet handed to the stream (``stream_tokens`` batches them)."""

    @property
    def blocks(self) -> int:
        return math.ceil((self.prompt_tokens + self.generated + 1) / BLOCK)


class Engine:
    """vLLM's scheduler loop in simulated time: admit from the waiting queue while blocks and the
    step's token budget allow, decode every running sequence one token per step."""

    def __init__(
        self,
        sizing: Sizing,
        product: str,
        registry: CollectorRegistry,
        speedup: float = 1.0,
        stream_tokens: int = 1,
    ) -> None:
        bw = bandwidth(product)
        self.speedup, self.stream_tokens = speedup, max(1, stream_tokens)
        self.alpha = sizing.weights_mib * MIB / (EFFICIENCY * bw)
        self.beta = BETA_H100_S * 3350e9 / bw
        self.prefill = 1 / (PREFILL_H100_TOKENS_S * bw / 3350e9)
        self.blocks = sizing.kv_tokens // BLOCK
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._wake = asyncio.Event()
        labels = {"model_name": sizing.served_name, "engine": "0"}
        names = list(labels)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=registry)

        self.m_running = gauge("vllm:num_requests_running", "Requests in the running batch")
        self.m_waiting = gauge("vllm:num_requests_waiting", "Requests waiting")
        self.m_kv = gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 0-1")
        self.m_prompt = Counter("vllm:prompt_tokens", "Prefill tokens", names, registry=registry)
        self.m_gen = Counter("vllm:generation_tokens", "Generated", names, registry=registry)
        self.m_ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "TTFT",
            names,
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5),
        )
        self.m_itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "ITL",
            names,
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0),
        )
        self.labels = labels
        for m in (self.m_running, self.m_waiting, self.m_kv):
            m.labels(**labels).set(0)
        for counter in (self.m_prompt, self.m_gen):  # at 0 from the start, as vLLM's are
            counter.labels(**labels)

    def step_seconds(self, decoding: int, prefill_tokens: int) -> float:
        return self.alpha + self.beta * decoding + self.prefill * prefill_tokens

    def clock(self) -> float:
        """Engine time: the wall's, ``speedup`` times faster."""
        return time.monotonic() * self.speedup

    def submit(self, request: Request) -> None:
        self.waiting.append(request)
        self._wake.set()

    def cancel(self, request: Request) -> None:
        if request in self.waiting:
            self.waiting.remove(request)
        if request in self.running:
            self.running.remove(request)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if not self.waiting and not self.running:
                self._publish()
                self._wake.clear()
                await self._wake.wait()
                due = loop.time()
            prefill = self._admit()
            decoding = list(self.running)
            step = self.step_seconds(len(decoding), prefill)
            # Sleep to the step's end on the wall, not for its length: the loop's own work does
            # not stretch a compressed replay.
            due = max(due + step / self.speedup, loop.time() - 0.05)
            await asyncio.sleep(max(0.0, due - loop.time()))
            self._finish_step(decoding, prefill, step)

    def _admit(self) -> int:
        """Chunked prefill: the waiting queue's head gets what the step's token budget and the
        free KV blocks allow; returns the prefill tokens of this step."""
        budget = STEP_TOKENS - len(self.running)
        used = sum(r.blocks for r in self.running)
        prefill = 0
        while self.waiting and len(self.running) < MAX_NUM_SEQS and budget > 0:
            head = self.waiting[0]
            if used + head.blocks > self.blocks:
                break
            chunk = min(budget, head.prompt_tokens - head.prefilled)
            head.prefilled += chunk
            budget -= chunk
            prefill += chunk
            if head.prefilled < head.prompt_tokens:
                break
            self.waiting.popleft()
            self.running.append(head)
            used += head.blocks
        return prefill

    def _finish_step(self, decoding: list[Request], prefill: int, step: float) -> None:
        now = self.clock()
        self.m_prompt.labels(**self.labels).inc(prefill)
        self.m_gen.labels(**self.labels).inc(len(decoding))
        if decoding:
            self.m_itl.labels(**self.labels).observe(step)
        for r in decoding:
            r.generated += 1
            r.unsent += 1
            done = r.generated >= r.max_tokens
            if r.first_token_at is None:
                r.first_token_at = now
                self.m_ttft.labels(**self.labels).observe(now - r.arrived)
            if r.generated == 1 or done or r.unsent >= self.stream_tokens:
                first = r.generated - r.unsent + 1
                r.tokens.put_nowait("".join(f" tok{i}" for i in range(first, r.generated + 1)))
                r.unsent = 0
            if done:
                r.tokens.put_nowait(None)
                self.running.remove(r)
        self._publish()

    def _publish(self) -> None:
        self.m_running.labels(**self.labels).set(len(self.running))
        self.m_waiting.labels(**self.labels).set(len(self.waiting))
        used = sum(r.blocks for r in self.running)
        self.m_kv.labels(**self.labels).set(used / self.blocks if self.blocks else 0.0)


def prompt_tokens(body: dict) -> int:
    """About 4 characters a token, as OpenAI's rule of thumb."""
    if "messages" in body:
        text = " ".join(str(m.get("content", "")) for m in body["messages"])
    else:
        prompt = body.get("prompt", "")
        text = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
    return max(1, len(text) // 4)


def _error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


class Server:
    """One replica: ``load_seconds`` of model load (``/health`` answers 503 until then), then
    serving."""

    def __init__(
        self,
        sizing: Sizing,
        product: str,
        load_seconds: float,
        speedup: float = 1.0,
        stream_tokens: int = 1,
    ) -> None:
        self.sizing = sizing
        self.registry = CollectorRegistry()
        self.engine = Engine(sizing, product, self.registry, speedup, stream_tokens)
        self.ready_at = time.monotonic() + load_seconds
        self.in_flight = 0
        self.served = 0
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/v1/chat/completions", self.complete)
        self.app = app
        self._loop_task: asyncio.Task | None = None

    def start_engine(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self.engine.run())

    def stop_engine(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if time.monotonic() >= self.ready_at else 503)

    async def models(self, _: web.Request) -> web.Response:
        model = {"id": self.sizing.served_name, "object": "model", "owned_by": "vllm"}
        return web.json_response({"object": "list", "data": [model]})

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def complete(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.ready_at:
            return _error(503, "the model is still loading", "ServiceUnavailableError")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not JSON")
        if body.get("model") not in (None, self.sizing.served_name):
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        chat = request.path.endswith("chat/completions")
        job = Request(prompt_tokens(body), int(body.get("max_tokens") or 16), self.engine.clock())
        self.in_flight += 1
        self.engine.submit(job)
        try:
            if body.get("stream"):
                return await self._stream(request, job, chat, body)
            text = []
            while (token := await job.tokens.get()) is not None:
                text.append(token)
            self.served += 1
            return web.json_response(self._body(job, "".join(text), chat, final=True))
        finally:
            self.engine.cancel(job)  # a client that went away frees its sequence at once
            self.in_flight -= 1

    async def _stream(
        self, request: web.Request, job: Request, chat: bool, body: dict
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while (token := await job.tokens.get()) is not None:
            chunk = self._body(job, token, chat, final=False)
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self._body(job, "", chat, final=False) | {"choices": [], "usage": _usage(job)}
            await response.write(f"data: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.served += 1
        return response

    def _body(self, job: Request, text: str, chat: bool, final: bool) -> dict:
        kind = "chat.completion" if chat else "text_completion"
        choice: dict = {"index": 0, "finish_reason": "length" if final else None}
        if chat:
            choice["delta" if not final else "message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        out = {
            "id": f"cmpl-{uuid.uuid4().hex[:12]}",
            "object": kind if final else f"{kind}.chunk",
            "created": int(time.time()),
            "model": self.sizing.served_name,
            "choices": [choice],
        }
        if final:
            out["usage"] = _usage(job)
        return out


def _usage(job: Request) -> dict[str, int]:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.generated,
        "total_tokens": job.prompt_tokens + job.generated,
    }
