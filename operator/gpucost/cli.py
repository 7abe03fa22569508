"""The ``gpucost`` command: the single wiring point of the operator and its dev tooling."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from gpucost.core.packing.policies import DEFAULT_POLICY, POLICIES

console = Console(stderr=True)


class _RoutineKopfLines(logging.Filter):
    """Drop kopf's per-handler "succeeded" lines: one per pod event drowns the decisions."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "kopf.objects" and record.getMessage().endswith("succeeded."))


def _period(text: str) -> str:
    from gpucost.api.common import duration_seconds

    try:
        duration_seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _report(args: argparse.Namespace) -> int:
    import json

    from gpucost import report
    from gpucost.adapters import kube
    from gpucost.adapters.prometheus import CostHistory

    kube.configure()
    k = kube.Kube()
    result = report.build(k.inference_pools(), k.node_pools(), k.compression_jobs())
    past = (
        report.history(CostHistory(args.prometheus_url), args.period)
        if args.prometheus_url
        else None
    )
    if args.png and past is not None:
        report.plot(past, args.png)
    if args.json:
        print(
            json.dumps(
                {**result.as_dict(), **({"history": past.as_dict()} if past else {})}, indent=1
            )
        )
        return 0
    console = Console()
    report.render(console, result)
    if past is not None:
        report.render_history(console, past)
    if args.png:
        console.print(f"wrote {args.png}")
    return 0


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from gpucost.adapters import kube
    from gpucost.handlers import build_registry
    from gpucost.settings import Autoscaling, PlacementSettings, Reconcile, Settings, Utilization

    settings = Settings(
        reconcile=Reconcile(resync_seconds=args.resync) if args.resync else Reconcile(),
        placement=PlacementSettings(policy=args.placement_policy)
        if args.placement_policy
        else PlacementSettings(),
        autoscaling=Autoscaling(interval_seconds=args.autoscale_interval)
        if args.autoscale_interval
        else Autoscaling(),
        utilization=Utilization(prometheus_url=args.prometheus_url)
        if args.prometheus_url
        else Utilization(),
        standalone=not args.peering,
        liveness_endpoint=args.liveness,
    )
    kube.configure()
    if args.metrics_port:
        from gpucost.adapters import metrics

        metrics.serve(args.metrics_port)
    registry = build_registry(kube.Kube(), settings)
    # kopf's formatter prefixes each object's lines with [namespace/name].
    kopf.configure(log_format=kopf.LogFormat.FULL, log_prefix=True)
    if not args.log_routine:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_RoutineKopfLines())

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        # Keep kopf's bookkeeping out of the user-facing status.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="gpucost.dev"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="gpucost.dev", key="last-handled-configuration"
        )
        # Only warnings become Events by way of the log; decisions are posted explicitly.
        settings.posting.level = logging.WARNING

    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=settings.standalone,
            liveness_endpoint=settings.liveness_endpoint,
        )
    )
    return 0


def _nvml_library(backend: str, fake_state: Path | None) -> Any:
    """What the agent's NVML adapter calls: pynvml itself, or the dev harness's fake (the one place
    a product command reaches into devcluster, so no product module imports it)."""
    if backend == "real":
        import pynvml

        return pynvml
    from gpucost.devcluster.fakenvml import FakeNVML

    if fake_state is None:
        raise SystemExit("--nvml fake needs --fake-nvml-state FILE")
    return FakeNVML(fake_state)


def _gateway(args: argparse.Namespace) -> int:
    import socket

    import uvloop

    from gpucost import gatewaykube
    from gpucost.adapters import kube

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    kube.configure()
    gateway_id = args.id or socket.gethostname()
    # libuv's event loop: the gateway's work is moving stream chunks between sockets, which
    # it does with less CPU a chunk than asyncio's own loop
    uvloop.run(gatewaykube.serve(kube.Kube(), gateway_id, args.host, args.port, args.namespace))
    return 0


def _agent(args: argparse.Namespace) -> int:
    import signal
    import threading

    from gpucost import agent
    from gpucost.adapters import kube, nvml
    from gpucost.adapters.metrics import serve

    if not args.node:
        raise SystemExit("gpucost agent needs --node (or NODE_NAME from the downward API)")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    kube.configure()
    if args.metrics_port:
        serve(args.metrics_port)
    settings = agent.AgentSettings(
        node=args.node,
        interval_seconds=args.interval,
        grace_seconds=args.grace,
        soft_limit_fraction=args.soft_limit,
        proc_root=args.proc_root,
        mps_pipe_dir=args.mps_pipe_dir,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(
        agent.Agent(
            kube.Kube(), nvml.NVML(_nvml_library(args.nvml, args.fake_nvml_state)), settings
        ),
        stop,
    )
    return 0


def _compress(args: argparse.Namespace) -> int:
    import json

    from gpucost.worker import main as worker

    given = {}
    for flag, raw in (("--method", args.method), ("--serving", args.serving)):
        try:
            given[flag] = json.loads(raw)
        except json.JSONDecodeError as e:
            print(f"{flag}: not JSON ({e.msg})", file=sys.stderr)
            return 1
    return worker.run(
        args.model,
        args.dataset,
        args.output,
        given["--method"],
        args.checkpoint_dir,
        args.checkpoint_every,
        args.seed,
        given["--serving"],
    )


def _crds(args: argparse.Namespace) -> int:
    from gpucost import crdfiles

    root = Path(args.root)
    if args.check:
        diffs = crdfiles.drift(root)
        for d in diffs:
            sys.stdout.write(d)
        if diffs:
            console.print(
                "[red]CRD YAML drifted from the models; run `gpucost crds` and commit.[/]"
            )
            return 1
        console.print("CRD YAML matches the models.")
        return 0
    for path in crdfiles.write(root):
        console.print(f"wrote {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gpucost.devcluster import demo

    if args.down:
        return demo.down()
    return demo.run(Path(args.root), keep=args.keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpucost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    op = sub.add_parser("operator", help="run the operator against $KUBECONFIG or in-cluster")
    op.add_argument("--resync", type=float, help="seconds between periodic reconciles (default 30)")
    op.add_argument(
        "--placement-policy",
        choices=POLICIES,
        help=f"packing policy for new replicas (default {DEFAULT_POLICY}; env "
        "GPUCOST_PLACEMENT_POLICY)",
    )
    op.add_argument(
        "--autoscale-interval",
        type=float,
        help="seconds between autoscaler looks (default 5; env GPUCOST_AUTOSCALE_INTERVAL)",
    )
    op.add_argument(
        "--prometheus-url",
        help="Prometheus with GPU utilization, for pools with idleUtilizationPercent (env "
        "GPUCOST_PROMETHEUS_URL)",
    )
    op.add_argument(
        "--metrics-port",
        type=int,
        default=8000,
        help="port of /metrics (default 8000; 0 turns it off)",
    )
    op.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    op.add_argument(
        "--log-routine", action="store_true", help="keep kopf's per-handler success lines"
    )
    op.add_argument(
        "--peering", action="store_true", help="use kopf peering instead of standalone mode"
    )
    op.set_defaults(func=_operator)

    gw = sub.add_parser(
        "gateway",
        help="OpenAI-compatible entry point: routes by model, holds requests while a pool wakes",
    )
    gw.add_argument("--host", default="0.0.0.0")
    gw.add_argument("--port", type=int, default=8080)
    gw.add_argument("--namespace", help="serve only this namespace's InferencePools")
    gw.add_argument(
        "--id",
        default=os.environ.get("POD_NAME"),
        help="this replica's id in the demand annotation (default $POD_NAME, else the hostname)",
    )
    gw.set_defaults(func=_gateway)

    ag = sub.add_parser(
        "agent", help="node agent: GPU discovery through NVML, slice enforcement, GPU metrics"
    )
    ag.add_argument(
        "--node", default=os.environ.get("NODE_NAME"), help="this node's name (default $NODE_NAME)"
    )
    ag.add_argument(
        "--nvml",
        choices=["real", "fake"],
        default="real",
        help="real: nvidia-ml-py; fake: the in-memory NVML (machines without a GPU, tests)",
    )
    ag.add_argument(
        "--fake-nvml-state",
        type=Path,
        help="JSON state of the fake NVML (see devcluster/fakenvml.py)",
    )
    ag.add_argument(
        "--interval", type=float, default=5.0, help="seconds between samples (default 5)"
    )
    ag.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="watch-evict: seconds over the slice before eviction (default 30)",
    )
    ag.add_argument(
        "--soft-limit",
        type=float,
        default=0.9,
        help="nvml-limit: soft limit as a fraction of the slice",
    )
    ag.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="the host's /proc (the pod runs with hostPID)",
    )
    ag.add_argument(
        "--mps-pipe-dir",
        type=Path,
        default=Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")),
    )
    ag.add_argument(
        "--metrics-port", type=int, default=9400, help="/metrics port, 0 for none (default 9400)"
    )
    ag.set_defaults(func=_agent)

    cw = sub.add_parser(
        "compress",
        help="the CompressionJob worker: quantize, prune or distill a model (needs .[compress])",
    )
    cw.add_argument(
        "--model",
        required=True,
        help="a Hugging Face model directory: a path, file://, s3://bucket/prefix or hf://org/name",
    )
    cw.add_argument(
        "--dataset",
        required=True,
        help="a .txt of paragraphs or a .jsonl with a text field (a path, file:// or s3://)",
    )
    cw.add_argument(
        "--output", required=True, help="folder or s3:// prefix for the model and results.json"
    )
    cw.add_argument(
        "--method",
        required=True,
        help='CompressionJob spec.method as JSON, e.g. {"quantize":{"scheme":"W4A16"}}',
    )
    cw.add_argument(
        "--serving",
        default="{}",
        help='spec.serving as JSON, e.g. {"maxModelLen":4096,"concurrency":8} (sizes the slice)',
    )
    cw.add_argument("--checkpoint-dir", help="resume from and write checkpoints here (spot-safe)")
    cw.add_argument(
        "--checkpoint-every", type=int, default=50, help="training steps between checkpoints"
    )
    cw.add_argument("--seed", type=int, default=0)
    cw.set_defaults(func=_compress)

    crds = sub.add_parser("crds", help="generate crds/*.yaml and the chart's copy from the models")
    crds.add_argument(
        "--check", action="store_true", help="exit 1 with a diff if the committed YAML drifted"
    )
    crds.add_argument("--root", default=".", help="repository root (default: .)")
    crds.set_defaults(func=_crds)

    rep = sub.add_parser(
        "report", help="cost by namespace, workload and pool (from $KUBECONFIG's cluster)"
    )
    rep.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    rep.add_argument(
        "--prometheus-url",
        default=os.environ.get("GPUCOST_PROMETHEUS_URL"),
        help="a Prometheus that scrapes the operator: adds cost over --period (default "
        "$GPUCOST_PROMETHEUS_URL)",
    )
    rep.add_argument(
        "--period",
        type=_period,
        default="24h",
        help="how far back, as a duration like 90m, 24h, 720h",
    )
    rep.add_argument(
        "--png",
        type=Path,
        help="plot cost per hour by namespace over the period (needs --prometheus-url and "
        "matplotlib)",
    )
    rep.set_defaults(func=_report)

    demo = sub.add_parser("demo", help="local control plane + fake GPU nodes + operator + examples")
    demo.add_argument("--root", default=".", help="repository root holding crds/ and examples/")
    demo.add_argument("--keep", action="store_true", help="leave the cluster and operator running")
    demo.add_argument("--down", action="store_true", help="stop a cluster left running by --keep")
    demo.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    if getattr(args, "png", None) and not args.prometheus_url:
        rep.error(
            "--png plots what Prometheus recorded: give --prometheus-url (or set "
            "GPUCOST_PROMETHEUS_URL)"
        )
    return int(args.func(args))
