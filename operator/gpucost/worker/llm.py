"""Compress a Hugging Face causal LM or encoder classifier: judge it on held-out text before and
after (perplexity; accuracy for a classifier), write the checkpoint vLLM serves (compressed-tensors
for quantize, a smaller dense model for prune and distill), and say what slice it needs at the
pool's load."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from gpucost.api.compressionjob import (
    Distill,
    Method,
    Prune,
    PruneTarget,
    Quantize,
    Results,
    Scheme,
    Serving,
)
from gpucost.core.servingmemory import recommended_mib, shape
from gpucost.worker import hf, shrink, storage
from gpucost.worker.train import blocks, labelled, train

CALIBRATION_EXAMPLES = 64
"""Training examples MLP pruning measures its channels on."""


def compress_model(
    model_uri: str,
    dataset_uri: str,
    out: Path,
    method: Method,
    serving: Serving,
    seed: int,
    checkpoints: Path | None,
    every: int,
) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    started = time.monotonic()
    path = storage.fetch(model_uri)
    config = hf.config_of(path, model_uri)
    classifier = hf.is_classifier(config)
    data = hf.texts(
        storage.fetch(dataset_uri), dataset_uri, seed, _label2id(config) if classifier else None
    )
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    trains = method.quantize is None
    # quantized as served (bf16); trained in fp32, which CPUs and small batches need to converge
    dtype = torch.float32 if trains else torch.bfloat16
    auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=dtype)
    if trains and torch.cuda.is_available():
        model = model.to("cuda")  # judged and cut there; llmcompressor places what it quantizes
    spec = method.quantize or method.prune or method.distill
    assert spec is not None
    # judged within the context the model was trained for: past it, both scores are noise
    context = int(config.get("max_position_embeddings") or spec.max_seq_length)
    judged = min(spec.max_seq_length, context)
    before = _quality(model, tokenizer, data, judged)
    before_bytes = hf.bf16_bytes(model)
    if method.quantize:
        from gpucost.worker.quantize import quantize

        quantize(model, tokenizer, method.quantize, data.train, classifier)
        done = _quantized(method.quantize)
    else:
        model, done = _smaller(model, tokenizer, method, data, judged, checkpoints, every, seed)
        model = model.to(torch.bfloat16)  # served in bf16, judged as served
    after = _quality(model, tokenizer, data, judged)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, save_compressed=bool(method.quantize))
    tokenizer.save_pretrained(out)
    after_bytes = hf.tensor_bytes(out)
    was, now = shape(config), shape(json.loads((out / "config.json").read_text()))
    kv = now.kv_bytes_per_token(1 if method.quantize and method.quantize.kv_cache_scheme else 2)
    slice_mib = recommended_mib(after_bytes, kv, serving.max_model_len, serving.concurrency)
    was_mib = recommended_mib(
        before_bytes, was.kv_bytes_per_token(), serving.max_model_len, serving.concurrency
    )
    results: dict[str, Any] = {
        **done,
        "architecture": hf.architecture(config),
        "before": {**before, "weightBytes": before_bytes},
        "after": {**after, "weightBytes": after_bytes},
        "weightRatio": round(after_bytes / before_bytes, 4),
        **_change(before, after),
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
        f"{done['label']}: weights {before_bytes / 1e6:.2f} MB -> "
        f"{after_bytes / 1e6:.2f} MB ({results['weightRatio'] * 100:.0f} % of bf16), "
        f"{_said(before, after)}, slice {was_mib} -> {slice_mib} MiB"
    )
    return results


def _label2id(config: dict[str, Any]) -> dict[str, int]:
    """The classifier's classes by name (transformers' LABEL_<i> when it names none)."""
    given = config.get("label2id") or {}
    if given:
        return {str(k): int(v) for k, v in given.items()}
    return {f"LABEL_{i}": i for i in range(int(config.get("num_labels", 2)))}


def _quality(model: Any, tokenizer: Any, data: hf.Texts, length: int) -> dict[str, float]:
    """Held-out accuracy for a classifier, held-out perplexity for a causal LM."""
    if data.held_out_labels is not None:
        score = hf.accuracy(model, tokenizer, data.held_out, data.held_out_labels, length)
        return {"accuracy": round(score, 4)}
    return {"perplexity": round(hf.perplexity(model, tokenizer, data.held_out, length), 4)}


def _change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    if "accuracy" in before:
        return {"accuracyChangePoints": round((after["accuracy"] - before["accuracy"]) * 100, 2)}
    increase = (after["perplexity"] / before["perplexity"] - 1) * 100
    return {"perplexityIncreasePercent": round(increase, 2)}


def _said(before: dict[str, float], after: dict[str, float]) -> str:
    if "accuracy" in before:
        a, b = before["accuracy"] * 100, after["accuracy"] * 100
        return f"accuracy {a:.1f} % -> {b:.1f} % ({b - a:+.1f} points)"
    a, b = before["perplexity"], after["perplexity"]
    return f"perplexity {a:.2f} -> {b:.2f} ({(b / a - 1) * 100:+.1f} %)"


def _quantized(q: Quantize) -> dict[str, Any]:
    scheme = Scheme(q.scheme).value
    label = f"quantize {scheme}" + (" + FP8 KV cache" if q.kv_cache_scheme else "")
    return {
        "method": "quantize",
        "scheme": scheme,
        "kvCacheScheme": q.kv_cache_scheme,
        "label": label,
    }


def _smaller(
    model: Any,
    tokenizer: Any,
    method: Method,
    data: hf.Texts,
    length: int,
    checkpoints: Path | None,
    every: int,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """The pruned or distilled model, trained back, and what was done to it."""
    layers, width = model.config.num_hidden_layers, model.config.intermediate_size
    spec = method.prune or method.distill
    assert spec is not None
    steps = spec.fine_tune_steps if isinstance(spec, Prune) else spec.steps
    by_mlp = method.prune is not None and PruneTarget(method.prune.target) is PruneTarget.MLP
    # tokenized only when a step reads it: a big dataset takes minutes to tokenize
    examples = _examples(tokenizer, data, length) if by_mlp or steps else []
    if method.prune:
        p: Prune = method.prune
        if by_mlp:
            student = shrink.prune_mlp(model, p.amount, examples[:CALIBRATION_EXAMPLES])
        else:
            student = shrink.drop_layers(model, max(1, round(layers * (1 - p.amount))))
        teacher, alpha, temperature = None, 0.0, 1.0
        name = f"prune {PruneTarget(p.target).value} {p.amount * 100:g} %"
    else:
        d: Distill = method.distill
        student = shrink.drop_layers(model, shrink.student_layers(model.config, d.student_layers))
        teacher, alpha, temperature = model, d.alpha, d.temperature
        name = f"distill {student.config.num_hidden_layers} of {layers} layers"
    done: dict[str, Any] = {
        "method": "prune" if method.prune else "distill",
        "label": name,
        "layers": {"before": layers, "after": student.config.num_hidden_layers},
        "intermediateSize": {"before": width, "after": student.config.intermediate_size},
        "steps": 0,
        "resumedFromStep": 0,
    }
    if steps:
        trained = train(
            student,
            teacher,
            examples,
            steps=steps,
            learning_rate=spec.learning_rate,
            alpha=alpha,
            temperature=temperature,
            checkpoints=checkpoints,
            every=every,
            seed=seed,
        )
        done.update(
            steps=trained.steps, resumedFromStep=trained.resumed_from, trainLoss=trained.loss
        )
    return student, done


def _examples(tokenizer: Any, data: hf.Texts, length: int) -> list[dict[str, Any]]:
    """The training split as a classifier's labelled texts or a causal LM's token blocks."""
    if data.train_labels is not None:
        return labelled(tokenizer, data.train, data.train_labels, length)
    return blocks(tokenizer, data.train, length)


def short(results: dict[str, Any]) -> Results:
    """The figures the job's status carries (the controller reads them from the termination
    message: it cannot read the job's volume)."""
    return Results(
        method=results["method"],
        scheme=results.get("scheme"),
        weight_bytes_before=results["before"]["weightBytes"],
        weight_bytes_after=results["after"]["weightBytes"],
        weight_ratio=results["weightRatio"],
        perplexity_before=results["before"].get("perplexity"),
        perplexity_after=results["after"].get("perplexity"),
        perplexity_increase_percent=results.get("perplexityIncreasePercent"),
        accuracy_before=results["before"].get("accuracy"),
        accuracy_after=results["after"].get("accuracy"),
        accuracy_change_points=results.get("accuracyChangePoints"),
        recommended_memory_mib=results["serving"]["memoryMiB"],
        bf16_memory_mib=results["serving"]["bf16MemoryMiB"],
        seconds=results["seconds"],
    )
