"""Which model an InferencePool with ``spec.modelFrom`` serves: the CompressionJob's output once
the job succeeded and its results pass the pool's quality gate, else what it served before.

The verdict is kept in the pool's status (``adoptedModel``), and :func:`effective` turns it into
the spec every reader acts on (placement, the pod template and its rollout, the autoscaler's asks,
cost), so they agree, a restarted operator serves the same, and a deleted or re-run job never
rolls the pool back on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gpucost.api.compressionjob import Results
from gpucost.api.inferencepool import AdoptedModel, InferencePoolSpec
from gpucost.core.engine import MIB
from gpucost.core.inventory import GPUNode

CONDITION = "ModelAdopted"


@dataclass(frozen=True)
class Verdict:
    adopted: AdoptedModel | None
    """What the pool serves from now on (a kept earlier adoption while a new one is not due)."""
    ok: bool
    reason: str
    message: str


def judge(
    spec: InferencePoolSpec, job: Mapping[str, Any] | None, kept: AdoptedModel | None
) -> Verdict:
    ref = spec.model_from
    assert ref is not None
    name = ref.compression_job
    keeping = (
        f"; still serving {kept.model_uri} from CompressionJob {kept.compression_job}"
        if kept
        else "; serving spec.modelUri"
    )
    if job is None:
        return Verdict(kept, False, "CompressionJobNotFound", f"no CompressionJob {name}{keeping}")
    status = job.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        why = status.get("message") or "no message"
        return Verdict(kept, False, "CompressionJobFailed", f"{name} failed: {why}{keeping}")
    if phase != "Succeeded":
        return Verdict(kept, False, "CompressionJobNotDone", f"{name} is {phase}{keeping}")
    uid = job["metadata"]["uid"]
    if kept is not None and kept.compression_job == name and kept.job_uid == uid:
        return Verdict(kept, True, "Adopted", describe(kept))
    try:
        results = Results.model_validate(status.get("results") or {})
    except ValidationError:
        results = Results()
    judged = results.perplexity_increase_percent is not None or results.accuracy_after is not None
    if not judged or results.weight_bytes_after is None:
        return Verdict(kept, False, "NoResults", f"{name} reported no quality figures{keeping}")
    failed = _over_gate(spec, results)
    if failed:
        return Verdict(kept, False, "QualityGateFailed", f"{name}: {failed}{keeping}")
    resize = ref.resize_slice and spec.gpu.memory_mib is not None
    adopted = AdoptedModel(
        compression_job=name,
        job_uid=uid,
        model_uri=(job.get("spec") or {})["outputUri"],
        memory_mib=results.recommended_memory_mib if resize else None,
        model_memory_mib=max(1, math.ceil(results.weight_bytes_after / MIB)),
        scheme=results.scheme or results.method,
        weight_ratio=results.weight_ratio,
        perplexity_increase_percent=results.perplexity_increase_percent,
        accuracy_change_points=results.accuracy_change_points,
        spec_memory_mib=spec.gpu.memory_mib,
    )
    return Verdict(adopted, True, "Adopted", describe(adopted))


def _over_gate(spec: InferencePoolSpec, r: Results) -> str | None:
    """Which bound of the pool's qualityGate the results break, in numbers; None if none."""
    gate = spec.quality_gate
    if r.perplexity_increase_percent is not None:
        if r.perplexity_increase_percent > gate.max_perplexity_increase_percent:
            return (
                f"perplexity {r.perplexity_before} -> {r.perplexity_after} "
                f"({r.perplexity_increase_percent:+.2f} %) is over qualityGate."
                f"maxPerplexityIncreasePercent {gate.max_perplexity_increase_percent:g}"
            )
        return None
    before, after = r.accuracy_before or 0.0, r.accuracy_after or 0.0
    said = f"accuracy {before:.4f} -> {after:.4f}"
    drop = round((before - after) * 100, 2)
    if drop > gate.max_accuracy_drop_points:
        return (
            f"{said} ({-drop:+.2f} points) is over qualityGate.maxAccuracyDropPoints "
            f"{gate.max_accuracy_drop_points:g}"
        )
    if gate.min_accuracy is not None and after < gate.min_accuracy:
        return f"{said} is under qualityGate.minAccuracy {gate.min_accuracy:g}"
    return None


def describe(a: AdoptedModel) -> str:
    sliced = (
        f", {a.memory_mib} MiB slices (spec: {a.spec_memory_mib})"
        if a.memory_mib is not None
        else ""
    )
    quality = (
        f"perplexity {a.perplexity_increase_percent:+.2f} %"
        if a.perplexity_increase_percent is not None
        else f"accuracy {a.accuracy_change_points or 0:+.2f} points"
    )
    return (
        f"serving {a.model_uri} from CompressionJob {a.compression_job} ({a.scheme}, weights "
        f"{(a.weight_ratio or 0) * 100:.0f} % of bf16, {quality}){sliced}"
    )


def effective(spec: InferencePoolSpec, adopted: AdoptedModel | None) -> InferencePoolSpec:
    """The spec with the adopted model in it; the spec itself once modelFrom is removed."""
    if adopted is None or spec.model_from is None:
        return spec
    gpu = spec.gpu
    if (
        adopted.memory_mib is not None
        and gpu.memory_mib is not None
        and spec.model_from.resize_slice
    ):
        gpu = gpu.model_copy(update={"memory_mib": adopted.memory_mib})
    return spec.model_copy(
        update={
            "model_uri": adopted.model_uri,
            "model_memory_mib": adopted.model_memory_mib,
            "gpu": gpu,
        }
    )


def served(obj: Mapping[str, Any]) -> InferencePoolSpec:
    """The spec an InferencePool object is served by (its adopted model in); raises pydantic's
    ValidationError for a bad spec, as validating the spec does."""
    spec = InferencePoolSpec.model_validate(obj.get("spec") or {})
    raw = (obj.get("status") or {}).get("adoptedModel")
    try:
        adopted = AdoptedModel.model_validate(raw) if raw else None
    except ValidationError:
        adopted = None  # a broken status mark adopts nothing; the pool's reconcile rewrites it
    return effective(spec, adopted)


def priced(adopted: AdoptedModel, node: GPUNode) -> AdoptedModel:
    """With what a replica's slice costs before and after on ``node``'s type: its share of the
    node's price by GPU memory, as cost accounting charges it."""
    total = sum(g.memory_mib for g in node.gpus)
    if adopted.memory_mib is None or adopted.spec_memory_mib is None or not total:
        return adopted
    per_mib = node.price_per_hour / total
    return adopted.model_copy(
        update={
            "cost_per_replica_hour_before": round(adopted.spec_memory_mib * per_mib, 6),
            "cost_per_replica_hour_after": round(adopted.memory_mib * per_mib, 6),
        }
    )
