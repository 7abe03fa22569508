"""What quantization saves when served, for real model shapes, from config arithmetic alone.

For Llama-3.1-8B, Qwen2.5-7B and Llama-3.1-70B (their config.json values below), each scheme's
weight bytes (``core.servingmemory.weight_bytes``: the decoder Linears at the scheme's bits,
embeddings and norms at 16), the slice a replica needs at ``--max-model-len`` x ``--concurrency``
resident tokens (weights + KV cache + engine overhead, the same rule the CompressionJob worker
reports), how many such replicas one GPU holds, and the $ per replica-hour that leaves on
AWS us-east-1 on-demand prices from ``../shared/data/prices``. Ratios are against bf16 on the
same GPU. The measured side (the worker on a tiny model) is ``tests/unit/test_quantize_llm.py``.

    .venv/bin/python bench/compress.py [--max-model-len 4096] [--concurrency 8] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

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
SCHEMES = {  # name: (weight bits, KV-cache bytes per element)
    "bf16": (None, 2),
    "W8A8": (8, 2),
    "W4A16": (4, 2),
    "W4A16 + FP8 KV": (4, 1),
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
        s = shape(config)
        base: dict[str, float] = {}
        for scheme, (bits, kv_bytes) in SCHEMES.items():
            weights = weight_bytes(config, bits)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
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
