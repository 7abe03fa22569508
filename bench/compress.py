"""What compression saves when served: for real model shapes from config arithmetic alone, and
measured on a tiny trained family (``--measure``).

For Llama-3.1-8B, Qwen2.5-7B and Llama-3.1-70B (their config.json values below), each scheme's
weight bytes (``core.servingmemory.weight_bytes``: the decoder Linears at the scheme's bits,
embeddings and norms at 16; a structured prune or a half-depth student changes the config
itself), the slice a replica needs at ``--max-model-len`` x ``--concurrency`` resident tokens
(weights + KV cache + engine overhead, the same rule the CompressionJob worker reports), how many
such replicas one GPU holds, and the $ per replica-hour that leaves on AWS us-east-1 on-demand
prices from ``../shared/data/prices``. Ratios are against bf16 on the same GPU.

``--measure`` runs the worker itself (``gpucost compress``'s code, one thread) on tiny Llamas of
two sizes trained here (devcluster.tinymodels; cached after the first run, about 3 and 5 minutes):
per method, the weight ratio, the held-out perplexity change, the seconds and the recommended
slice.

    .venv/bin/python bench/compress.py [--max-model-len 4096] [--concurrency 8] [--json]
    .venv/bin/python bench/compress.py --measure [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gpucost.core.servingmemory import recommended_mib, shape, weight_bytes

PRICES = (
    Path(__file__).resolve().parents[2] / "shared/data/prices/aws_ec2_gpu_linux_ondemand_spot.csv"
)
MODELS = {
    "Llama-3.1-8B": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
    "Qwen2.5-7B": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
    },
    "Llama-3.1-70B": {
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
}
SCHEMES = {  # name: (weight bits, KV-cache bytes per element, what it does to the config)
    "bf16": (None, 2, {}),
    "W8A8": (8, 2, {}),
    "W4A16": (4, 2, {}),
    "W4A16 + FP8 KV": (4, 1, {}),
    "prune MLP 50 %": (None, 2, {"intermediate_size": 0.5}),
    "distill 1/2 layers": (None, 2, {"num_hidden_layers": 0.5}),
}
METHODS = {  # the tiny family: what --measure runs through the worker
    "W4A16": {"quantize": {"scheme": "W4A16"}},
    "W8A8": {"quantize": {"scheme": "W8A8"}},
    "FP8_DYNAMIC": {"quantize": {"scheme": "FP8_DYNAMIC", "calibrationSamples": 0}},
    "W8A16 + FP8 KV": {"quantize": {"scheme": "W8A16", "kvCacheScheme": "FP8"}},
    "prune MLP 50 %": {"prune": {"amount": 0.5, "fineTuneSteps": 300}},
    "prune 1/2 layers": {"prune": {"target": "layers", "amount": 0.5, "fineTuneSteps": 300}},
    "distill 1/2 layers": {"distill": {"steps": 300}},
}
GPUS = {"A10G": "g5.xlarge", "A100-80GB": "p4de.24xlarge", "H100": "p5.48xlarge"}


def gpu_prices() -> dict[str, tuple[int, float]]:
    """Per GPU kind: (MiB of one GPU, $ per GPU-hour on demand in us-east-1)."""
    out = {}
    with PRICES.open() as f:
        rows = {(r["instance_type"], r["region"]): r for r in csv.DictReader(f)}
    for gpu, instance in GPUS.items():
        row = rows[(instance, "us-east-1")]
        count = int(row["gpu_count"])
        mib = int(float(row["gpu_memory_gib_total"]) * 1024 / count)
        out[gpu] = (mib, float(row["ondemand_usd_hr"]) / count)
    return out


def rows(max_model_len: int, concurrency: int) -> list[dict]:
    prices = gpu_prices()
    out = []
    for model, config in MODELS.items():
        base: dict[str, float] = {}
        for scheme, (bits, kv_bytes, change) in SCHEMES.items():
            made = {**config, **{k: int(config[k] * f) for k, f in change.items()}}
            s = shape(made)
            weights = weight_bytes(made, bits)
            slice_mib = recommended_mib(
                weights, s.kv_bytes_per_token(kv_bytes), max_model_len, concurrency
            )
            row = {
                "model": model,
                "scheme": scheme,
                "weight_gb": round(weights / 1e9, 2),
                "slice_mib": slice_mib,
            }
            for gpu, (mib, per_gpu) in prices.items():
                per = mib // slice_mib
                cost = round(per_gpu / per, 4) if per else None
                if scheme == "bf16":
                    base[gpu] = cost or 0.0
                row[gpu] = {
                    "replicas_per_gpu": per,
                    "usd_per_replica_hour": cost,
                    "vs_bf16": round(cost / base[gpu], 3) if cost and base[gpu] else None,
                }
            out.append(row)
    return out


def measured(serving: dict[str, int]) -> list[dict[str, Any]]:
    """Each METHODS entry through the worker on each tiny size, with rich progress."""
    import torch
    from rich.progress import Progress

    from gpucost.devcluster import tinymodels
    from gpucost.worker.main import compress

    torch.set_num_threads(1)  # two threads on a shared 2-core machine ran 2-10x slower
    # every Linear's inputs a multiple of W4A16's group of 128
    small = tinymodels.CausalShape(intermediate=256, layers=2)
    sizes = {"tiny-0.4M": small, "tiny-0.9M": tinymodels.CausalShape()}
    out = []
    with Progress() as bar, tempfile.TemporaryDirectory() as tmp:
        task = bar.add_task("compressing", total=len(sizes) * len(METHODS))
        for size, causal in sizes.items():
            bar.update(task, description=f"training {size} (cached after the first run)")
            model = tinymodels.causal_lm(causal)
            text = model.parent / "stdlib-docs.txt"
            for name, method in METHODS.items():
                bar.update(task, description=f"{size}: {name}")
                where = Path(tmp) / size / name.replace(" ", "_").replace("/", "-")
                r = compress(f"file://{model}", str(text), str(where), method, None, 50, 0, serving)
                out.append(
                    {
                        "size": size,
                        "method": name,
                        "weight_ratio": r["weightRatio"],
                        "perplexity_before": r["before"]["perplexity"],
                        "perplexity_after": r["after"]["perplexity"],
                        "perplexity_increase_percent": r["perplexityIncreasePercent"],
                        "seconds": r["seconds"],
                        "slice_mib": r["serving"]["memoryMiB"],
                        "bf16_slice_mib": r["serving"]["bf16MemoryMiB"],
                        "kv_bytes_per_token": r["serving"]["kvBytesPerToken"],
                    }
                )
                bar.advance(task)
    return out


def show_measured(table_rows: list[dict[str, Any]], serving: dict[str, int]) -> None:
    table = Table(
        title=f"the worker on tiny Llamas (one thread; slice at {serving['concurrency']} x "
        f"{serving['maxModelLen']} tokens)"
    )
    table.add_column("size")
    table.add_column("method")
    for column in ("weights vs bf16", "perplexity", "change", "s", "slice MiB", "KV B/token"):
        table.add_column(column, justify="right")
    for r in table_rows:
        table.add_row(
            r["size"],
            r["method"],
            f"{r['weight_ratio'] * 100:.0f} %",
            f"{r['perplexity_before']:.2f} -> {r['perplexity_after']:.2f}",
            f"{r['perplexity_increase_percent']:+.1f} %",
            f"{r['seconds']:.1f}",
            f"{r['bf16_slice_mib']} -> {r['slice_mib']}",
            str(r["kv_bytes_per_token"]),
        )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--measure", action="store_true", help="run the worker on the tiny family instead"
    )
    args = parser.parse_args()
    if args.measure:
        serving = {"maxModelLen": 256, "concurrency": 4}
        with contextlib.redirect_stdout(sys.stderr):  # llmcompressor logs to stdout
            found = measured(serving)
        if args.json:
            print(json.dumps({"serving": serving, "rows": found}))
        else:
            show_measured(found, serving)
        return
    table_rows = rows(args.max_model_len, args.concurrency)
    if args.json:
        print(
            json.dumps(
                {
                    "max_model_len": args.max_model_len,
                    "concurrency": args.concurrency,
                    "rows": table_rows,
                }
            )
        )
        return
    table = Table(
        title=f"one replica = {args.concurrency} x {args.max_model_len} tokens resident; "
        "$ per replica-hour on AWS us-east-1 on demand (vs bf16 on that GPU)"
    )
    for column in ("model", "scheme", "weights GB", "slice MiB", *GPUS):
        table.add_column(column, justify="left" if column in ("model", "scheme") else "right")
    for r in table_rows:
        cells = []
        for gpu in GPUS:
            g = r[gpu]
            cells.append(
                f"{g['replicas_per_gpu']}/GPU ${g['usd_per_replica_hour']:.3f}"
                + (f" ({g['vs_bf16']:.2f}x)" if g["vs_bf16"] is not None else "")
                if g["replicas_per_gpu"]
                else "does not fit"
            )
        table.add_row(r["model"], r["scheme"], f"{r['weight_gb']:.1f}", str(r["slice_mib"]), *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
