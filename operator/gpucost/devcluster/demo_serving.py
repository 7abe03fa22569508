"""The demo's serving act: a vLLM pool answering a request through its endpoint, a rollout
under streaming traffic, and ``kubectl scale``, with the serving harness's simulated vLLM on
each replica's pod IP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import yaml
from rich.console import Console

from gpucost.api.common import condition
from gpucost.devcluster.controlplane import SERVE, ControlPlane, poll
from gpucost.devcluster.serving import Harness, Traffic, check_pod_network, ready_endpoints

QUALIFIED = "inferencepools.gpucost.dev"
POOL = {
    "apiVersion": "gpucost.dev/v1alpha1",
    "kind": "InferencePool",
    "metadata": {"name": "chat", "namespace": "default"},
    "spec": {
        "image": "vllm/vllm-openai:v0.11.0",
        "args": ["--model", "/models/llama-3.1-8b-instruct", "--served-model-name", "chat"],
        "modelMemoryMiB": 15400,
        "replicas": 2,
        "gpu": {"memoryMiB": 20000},
        "env": [{"name": "SIM_LOAD_SECONDS", "value": "2"}],  # the harness's model load time
        "probes": {"readiness": {"periodSeconds": 1}},
        "template": {"metadata": {"annotations": {SERVE: "true"}}},
    },
}


def _pool(cp: ControlPlane) -> dict[str, Any]:
    return json.loads(cp.kubectl("get", QUALIFIED, "chat", "-n", "default", "-o", "json").stdout)


def _rolled_out(cp: ControlPlane, replicas: int) -> bool:
    obj = _pool(cp)
    status = obj.get("status") or {}
    return (
        status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
        and condition(status, "Progressing").get("reason") == "NewRevisionAvailable"
    )


async def _ask(target: str) -> dict[str, Any]:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Why pack replicas by GPU memory?"}],
        "max_tokens": 8,
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://{target}/v1/chat/completions", json=body) as r:
            return await r.json()


def run(cp: ControlPlane, console: Console) -> None:
    console.rule("Serving for real: the endpoint, a rollout, a scale")
    try:
        check_pod_network()
    except RuntimeError as e:
        console.print(f"[yellow]skipped[/]: {e}")
        return
    harness = Harness(cp.kubeconfig)
    harness.start()
    try:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(POOL))
        with console.status("Waiting for 2 replicas to load and pass their readiness probe …"):
            poll("2 Ready", lambda: _rolled_out(cp, 2), 120, interval=0.5)
        pods = cp.kubectl(
            "get", "pods", "-l", "gpucost.dev/inferencepool=chat", "-o",
            "custom-columns=POD:.metadata.name,IP:.status.podIP,READY:.status.containerStatuses[0]"
            ".ready,ARGS:.spec.containers[0].args",
        )  # fmt: skip
        console.print(pods.stdout.rstrip(), overflow="fold")
        slices = cp.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=chat")
        console.print(slices.stdout.rstrip())
        target = ready_endpoints(harness.core, "default", "chat")[0]
        answer = asyncio.run(_ask(target))
        console.print(f"POST http://{target}/v1/chat/completions (endpoint of {_endpoint(cp)})")
        console.print(
            f"  → {answer['choices'][0]['message']['content']!r}, usage {answer['usage']}"
        )
        _rollout(cp, harness, console)
        console.print("kubectl scale ipool chat --replicas 4")
        cp.kubectl("scale", "ipool", "chat", "-n", "default", "--replicas", "4")
        with console.status("Waiting for 4 Ready endpoints …"):
            poll(
                "4 endpoints",
                lambda: len(ready_endpoints(harness.core, "default", "chat")) == 4,
                120,
                interval=0.5,
            )
        console.print(f"  → {len(ready_endpoints(harness.core, 'default', 'chat'))} endpoints")
    finally:
        harness.stop()


def _endpoint(cp: ControlPlane) -> str:
    return (_pool(cp).get("status") or {}).get("endpoint", "")


def _rollout(cp: ControlPlane, harness: Harness, console: Console) -> None:
    patch = '{"spec":{"image":"vllm/vllm-openai:v0.11.1"}}'
    console.print(f"kubectl patch ipool chat --type=merge -p '{patch}'   (under streaming traffic)")
    low = 2
    seen: list[str] = []
    started = time.monotonic()
    with Traffic(harness, "default", "chat", model="chat") as traffic:
        poll("traffic", lambda: traffic.ok >= 10, 30, interval=0.2)
        cp.kubectl("patch", QUALIFIED, "chat", "-n", "default", "--type=merge", "-p", patch)
        while time.monotonic() - started < 180:
            obj = _pool(cp)
            message = condition(obj.get("status"), "Progressing").get("message", "")
            if message and message not in seen:
                seen.append(message)
                console.print(f"  Progressing: {message}")
            low = min(low, len(ready_endpoints(harness.core, "default", "chat")))
            if _rolled_out(cp, 2) and "rolling" not in message and len(seen) > 1:
                break
            time.sleep(0.3)
    console.print(
        f"  → {traffic.ok} streamed requests answered during the rollout, "
        f"{len(traffic.failed)} failed; Ready endpoints never below {low}"
    )
