"""Which model a pool with spec.modelFrom serves: the job's output once it succeeded and passed
the quality gate (with its recommended slice unless pinned), else what it served before."""

from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.core.adoption import effective, judge, served
from tests.builders import compression_results

POOL = {
    "image": "vllm/vllm-openai:v0.33.0",
    "modelUri": "file:///models/llama-bf16/",
    "gpu": {"memoryMiB": 24000},
    "modelFrom": {"compressionJob": "llama-w4"},
    "qualityGate": {"maxPerplexityIncreasePercent": 5},
}


def job(phase: str = "Succeeded", uid: str = "u1", **results) -> dict:
    return {
        "metadata": {"name": "llama-w4", "uid": uid},
        "spec": {"outputUri": "file:///models/llama-w4a16/"},
        "status": {"phase": phase, "message": "boom", "results": compression_results(**results)},
    }


def spec(**kw) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate({**POOL, **kw})


def test_a_passing_job_is_served_on_its_recommended_slice():
    v = judge(spec(), job(), None)
    assert v.ok and v.reason == "Adopted" and v.adopted is not None
    served_spec = effective(spec(), v.adopted)
    assert served_spec.model_uri == "file:///models/llama-w4a16/"
    assert served_spec.gpu.memory_mib == 11776 and served_spec.model_memory_mib == 5436
    assert "11776 MiB slices (spec: 24000)" in v.message and "+2.47 %" in v.message


def test_a_pinned_slice_stays_and_whole_gpus_are_never_resized():
    pinned = spec(modelFrom={"compressionJob": "llama-w4", "resizeSlice": False})
    assert effective(pinned, judge(pinned, job(), None).adopted).gpu.memory_mib == 24000
    whole = spec(gpu={"gpus": 1})
    served_spec = effective(whole, judge(whole, job(), None).adopted)
    assert served_spec.gpu.gpus == 1 and served_spec.gpu.memory_mib is None


def test_a_failed_gate_changes_nothing_and_names_the_numbers():
    v = judge(spec(), job(perplexityAfter=9.0, perplexityIncreasePercent=11.11), None)
    assert not v.ok and v.reason == "QualityGateFailed" and v.adopted is None
    assert "8.1 -> 9.0 (+11.11 %)" in v.message and "maxPerplexityIncreasePercent 5" in v.message
    assert effective(spec(), v.adopted).model_uri == "file:///models/llama-bf16/"


def test_an_earlier_adoption_is_kept_while_the_job_is_gone_failed_or_rerunning():
    kept = judge(spec(), job(), None).adopted
    for missing in (None, job("Failed"), job("Running", uid="u2")):
        v = judge(spec(), missing, kept)
        assert not v.ok and v.adopted == kept and "still serving" in v.message
    assert judge(spec(), None, None).reason == "CompressionJobNotFound"
    assert judge(spec(), job("Failed"), None).message.startswith("llama-w4 failed: boom")


def test_removing_model_from_serves_the_spec_again():
    kept = judge(spec(), job(), None).adopted
    plain = spec(modelFrom=None)
    assert effective(plain, kept).model_uri == "file:///models/llama-bf16/"
    obj = {"spec": {**POOL}, "status": {"adoptedModel": kept.wire()}}
    assert served(obj).gpu.memory_mib == 11776
    assert served({"spec": POOL, "status": {"adoptedModel": {"bad": 1}}}).gpu.memory_mib == 24000


def test_the_status_prices_a_replica_before_and_after_on_its_node_type():
    from gpucost.core.adoption import priced
    from gpucost.core.inventory import GPU, GPUNode

    node = GPUNode(
        "a100-0", "a100", "on-demand", 4.0, (GPU(0, "A100", 40000), GPU(1, "A100", 40000))
    )
    adopted = priced(judge(spec(), job(), None).adopted, node)
    assert adopted.cost_per_replica_hour_before == 1.2  # 24,000 of 80,000 MiB of a $4/h node
    assert adopted.cost_per_replica_hour_after == 0.5888
    pinned = spec(modelFrom={"compressionJob": "llama-w4", "resizeSlice": False})
    assert priced(judge(pinned, job(), None).adopted, node).cost_per_replica_hour_after is None


def classifier_job(before: float, after: float) -> dict:
    """A pruned BERT classifier's results: accuracy, no perplexity."""
    return job(
        scheme=None,
        method="prune",
        perplexityBefore=None,
        perplexityAfter=None,
        perplexityIncreasePercent=None,
        accuracyBefore=before,
        accuracyAfter=after,
        accuracyChangePoints=round((after - before) * 100, 2),
    )


def test_a_classifier_is_judged_on_its_accuracy_drop_and_floor():
    gated = spec(qualityGate={"maxAccuracyDropPoints": 2, "minAccuracy": 0.8})
    v = judge(gated, classifier_job(0.85, 0.84), None)
    assert v.ok and "prune" in v.message and "accuracy -1.00 points" in v.message
    dropped = judge(gated, classifier_job(0.85, 0.80), None)
    assert dropped.reason == "QualityGateFailed" and dropped.adopted is None
    assert "accuracy 0.8500 -> 0.8000 (-5.00 points)" in dropped.message
    assert "maxAccuracyDropPoints 2" in dropped.message
    low = judge(gated, classifier_job(0.80, 0.79), None)
    assert not low.ok and "under qualityGate.minAccuracy 0.8" in low.message
    # the default gate allows one point
    assert not judge(spec(), classifier_job(0.85, 0.835), None).ok
    assert judge(spec(), classifier_job(0.85, 0.845), None).ok
