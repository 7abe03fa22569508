from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.core.placement import NoFit
from gpucost.core.snapshot import PlacedPod
from gpucost.handlers.inferencepool import build_status
from tests.builders import inference_pool_spec

BODY = {"metadata": {"name": "web", "namespace": "ns", "generation": 3}}


def pod(replica, ready=True):
    return PlacedPod(
        f"web-{replica}", "u", replica, "n", (0,), ("GPU-0",), 20000, "Running", ready, False
    )


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def test_all_ready():
    spec = InferencePoolSpec.model_validate(inference_pool_spec(replicas=2))
    status = build_status(body=BODY, spec=spec, mine=[pod(1), pod(0)], unplaced=[], impossible=None)
    assert (status["replicas"], status["readyReplicas"], status["observedGeneration"]) == (2, 2, 3)
    assert [p["replica"] for p in status["placements"]] == [0, 1]
    assert conditions(status)["Ready"]["reason"] == "AllReplicasReady"


def test_unplaced_replicas_say_how_much_is_missing():
    spec = InferencePoolSpec.model_validate(inference_pool_spec(replicas=3))
    miss = NoFit(
        "Unschedulable", "no GPU has room for a 20000 MiB slice of one GPU; short 8000 MiB", 8000
    )
    status = build_status(
        body=BODY, spec=spec, mine=[pod(0)], unplaced=[miss, miss], impossible=None
    )
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Unschedulable")
    assert "2 of 3 replicas unplaced" in ready["message"] and "short 8000 MiB" in ready["message"]
    assert status["unplacedReplicas"] == 2


def test_impossible_ask_is_no_matching_gpu():
    spec = InferencePoolSpec.model_validate(inference_pool_spec(replicas=2))
    status = build_status(body=BODY, spec=spec, mine=[], unplaced=[], impossible="no pool can")
    assert conditions(status)["Placed"]["reason"] == "NoMatchingGPU"
    assert status["unplacedReplicas"] == 2


def test_a_spec_the_model_rejects_becomes_an_invalid_spec_condition():
    from pydantic import ValidationError

    from gpucost.state.status import invalid_spec

    try:
        InferencePoolSpec.model_validate(inference_pool_spec(gpu={"memoryMiB": 1, "gpus": 1}))
    except ValidationError as e:
        status = invalid_spec(BODY, e)
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"], status["observedGeneration"]) == (
        "False",
        "InvalidSpec",
        3,
    )
    assert ready["message"].startswith("spec.gpu:") and "exactly one" in ready["message"]
