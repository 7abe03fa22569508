"""bench/compress.py's table from the prices as published: what each scheme buys on each GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("compress_bench", ROOT / "bench" / "compress.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smaller_schemes_pack_more_replicas_and_cost_less_per_replica():
    rows = {(r["model"], r["scheme"]): r for r in _bench().rows(4096, 8)}
    bf16, w4 = rows[("Llama-3.1-8B", "bf16")], rows[("Llama-3.1-8B", "W4A16")]
    assert w4["slice_mib"] < bf16["slice_mib"]
    for gpu in ("A10G", "A100-80GB", "H100"):
        assert w4[gpu]["replicas_per_gpu"] > bf16[gpu]["replicas_per_gpu"]
        assert w4[gpu]["vs_bf16"] <= 0.5
    assert rows[("Llama-3.1-70B", "bf16")]["H100"]["replicas_per_gpu"] == 0  # needs two GPUs
    assert rows[("Llama-3.1-70B", "W4A16")]["H100"]["replicas_per_gpu"] == 1
    fp8 = rows[("Llama-3.1-8B", "W4A16 + FP8 KV")]
    assert fp8["slice_mib"] < w4["slice_mib"]  # the KV cache halves, the weights stay


def test_a_half_depth_student_halves_weights_and_kv_where_a_narrower_mlp_halves_neither():
    rows = {(r["model"], r["scheme"]): r for r in _bench().rows(4096, 8)}
    bf16 = rows[("Llama-3.1-8B", "bf16")]
    student, pruned = (
        rows[("Llama-3.1-8B", "distill 1/2 layers")],
        rows[("Llama-3.1-8B", "prune MLP 50 %")],
    )
    # the embeddings stay, so half the layers is a little over half the weights
    assert 0.5 < student["weight_gb"] / bf16["weight_gb"] < 0.6
    assert student["slice_mib"] < pruned["slice_mib"] < bf16["slice_mib"]
    assert student["A100-80GB"]["replicas_per_gpu"] == 2 * bf16["A100-80GB"]["replicas_per_gpu"]


def test_the_command_prints_one_json_object():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compress.py"), "--json", "--concurrency", "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(out.stdout)
    assert data["concurrency"] == 2 and len(data["rows"]) == 3 * 6  # models x schemes
