"""Quantize a Hugging Face causal LM: judge it on held-out text before and after, write the
compressed-tensors checkpoint vLLM serves, and say what slice it needs at the pool's load."""

from __future__ import annotations

import os
import time
from typing import Any

from gpucost.api.compressionjob import Quantize, Results, Scheme, Serving
from gpucost.core.servingmemory import recommended_mib, shape
from gpucost.worker import hf
from gpucost.worker.data import local
from gpucost.worker.quantize import quantize


def quantize_model(
    model_uri: str, dataset_uri: str, output_uri: str, q: Quantize, serving: Serving, seed: int
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    path = local(model_uri)
    config = hf.config_of(path, model_uri)
    data = hf.texts(local(dataset_uri), dataset_uri, seed)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)  # as served
    # judged within the context the model was trained for: past it, both scores are noise
    judged = min(q.max_seq_length, int(config.get("max_position_embeddings") or q.max_seq_length))
    before = hf.perplexity(model, tokenizer, data.held_out, judged)
    before_bytes = hf.bf16_bytes(model)
    quantize(model, tokenizer, q, data.train)
    after = hf.perplexity(model, tokenizer, data.held_out, judged)
    out = local(output_uri)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    after_bytes = hf.tensor_bytes(out)
    s = shape(config)
    kv = s.kv_bytes_per_token(1 if q.kv_cache_scheme else 2)
    slice_mib = recommended_mib(after_bytes, kv, serving.max_model_len, serving.concurrency)
    was_mib = recommended_mib(
        before_bytes, s.kv_bytes_per_token(), serving.max_model_len, serving.concurrency
    )
    increase = round((after / before - 1) * 100, 2)
    scheme = Scheme(q.scheme).value
    results: dict[str, Any] = {
        "method": "quantize",
        "scheme": scheme,
        "kvCacheScheme": q.kv_cache_scheme,
        "architecture": config["architectures"][0],
        "before": {"perplexity": round(before, 4), "weightBytes": before_bytes},
        "after": {"perplexity": round(after, 4), "weightBytes": after_bytes},
        "weightRatio": round(after_bytes / before_bytes, 4),
        "perplexityIncreasePercent": increase,
        "seconds": round(time.monotonic() - started, 1),
        "serving": {
            "maxModelLen": serving.max_model_len,
            "concurrency": serving.concurrency,
            "kvBytesPerToken": kv,
            "memoryMiB": slice_mib,
            "bf16MemoryMiB": was_mib,
        },
        "attempt": int(os.environ.get("GPUCOST_ATTEMPT", "1")),
    }
    results["summary"] = (
        f"quantize {scheme}: weights {before_bytes / 1e6:.2f} MB -> "
        f"{after_bytes / 1e6:.2f} MB ({results['weightRatio'] * 100:.0f} % of bf16), perplexity "
        f"{before:.2f} -> {after:.2f} ({increase:+.1f} %), slice {was_mib} -> {slice_mib} MiB"
    )
    return results


def short(results: dict[str, Any]) -> Results:
    """The figures the job's status carries (the controller reads them from the termination
    message: it cannot read the job's volume)."""
    return Results(
        scheme=results["scheme"],
        weight_bytes_before=results["before"]["weightBytes"],
        weight_bytes_after=results["after"]["weightBytes"],
        weight_ratio=results["weightRatio"],
        perplexity_before=results["before"]["perplexity"],
        perplexity_after=results["after"]["perplexity"],
        perplexity_increase_percent=results["perplexityIncreasePercent"],
        recommended_memory_mib=results["serving"]["memoryMiB"],
        bf16_memory_mib=results["serving"]["bf16MemoryMiB"],
        seconds=results["seconds"],
    )
