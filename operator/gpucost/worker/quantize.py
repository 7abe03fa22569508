"""Quantization through llmcompressor (the vLLM project's own library), into the compressed-tensors
format vLLM loads as is.

What vLLM serves decides the recipe: ``lm_head`` (a classifier's head and pooler) stays in 16
bits (its kernels and the quality of the last projection both want that), GPTQ's activation
order is ``static`` (vLLM rejects the group and dynamic orders, which need a runtime
permutation), and W8A8 smooths activation outliers into the weights first (SmoothQuant) so int8
activations lose little.
"""

from __future__ import annotations

from typing import Any

from gpucost.api.compressionjob import Quantize, Scheme
from gpucost.worker.data import WorkerError

IGNORE = ["lm_head"]
CLASSIFIER_IGNORE = ["classifier", "re:.*pooler.*"]
FP8_KV = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}
"""The FP8 KV cache vLLM loads (static per-tensor scales, calibrated)."""


def calibrated(q: Quantize) -> bool:
    """Whether the recipe runs calibration text through the model: GPTQ does, and so do the
    static scales of an FP8 KV cache; round-to-nearest and FP8_DYNAMIC need none."""
    dynamic = Scheme(q.scheme) is Scheme.FP8_DYNAMIC
    return q.calibration_samples > 0 and (not dynamic or bool(q.kv_cache_scheme))


def recipe(q: Quantize, classifier: bool = False) -> list[Any]:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    scheme = Scheme(q.scheme)
    ignore = CLASSIFIER_IGNORE if classifier else IGNORE
    kv = FP8_KV if q.kv_cache_scheme else None
    if kv and classifier:
        raise WorkerError("quantize: an encoder classifier has no KV cache to store in FP8")
    if kv and not q.calibration_samples:
        raise WorkerError("quantize: an FP8 kvCacheScheme needs calibrationSamples above 0")
    if scheme is Scheme.FP8_DYNAMIC or not q.calibration_samples:
        return [
            QuantizationModifier(
                targets="Linear", scheme=scheme.value, ignore=ignore, kv_cache_scheme=kv
            )
        ]
    gptq = GPTQModifier(
        targets="Linear", scheme=scheme.value, ignore=ignore, actorder="static", kv_cache_scheme=kv
    )
    if scheme is Scheme.W8A8:
        return [SmoothQuantModifier(smoothing_strength=0.8), gptq]
    return [gptq]


def quantize(
    model: Any, tokenizer: Any, q: Quantize, calibration: list[str], classifier: bool = False
) -> None:
    """In place: the model's Linears quantized (fake-quantized in memory, so its held-out
    perplexity is what the served model scores); save it with ``save_compressed=True``."""
    from datasets import Dataset
    from llmcompressor import oneshot

    steps = recipe(q, classifier)
    samples = calibration[: q.calibration_samples]
    if q.calibration_samples and len(samples) < q.calibration_samples:
        raise WorkerError(
            f"quantize: calibrationSamples is {q.calibration_samples}, the dataset's training "
            f"split has {len(samples)} texts"
        )
    if not calibrated(q):
        oneshot(model=model, recipe=steps)
        return
    encoded = tokenizer(samples, truncation=True, max_length=q.max_seq_length)
    dataset = Dataset.from_dict(
        {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    )
    oneshot(
        model=model,
        dataset=dataset,
        recipe=steps,
        max_seq_length=q.max_seq_length,
        num_calibration_samples=len(samples),
    )
