"""The engine is told its slice; args that contradict it are refused with the flag's name."""

import pytest

from gpucost import manifests, podtemplate
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.core.engine import MIB, OVERHEAD_MIB, Slice, contradiction, engine_args, flag_value
from gpucost.core.placement import Placement
from tests.unit.test_manifests import node_pool

A100 = 81920


def spec(**extra) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate(
        {"image": "vllm/vllm-openai:v0.11.0", "gpu": {"memoryMiB": 20000}, **extra}
    )


def pod(the_spec: InferencePoolSpec, placement=None) -> dict:
    return manifests.replica_pod(
        pool="llm",
        namespace="ns",
        uid="u",
        spec=the_spec,
        replica=0,
        revision="r",
        placement=placement or Placement("n", (1,), ("GPU-1",), 20000),
        node_pool=node_pool(),
    )


def server(p: dict) -> dict:
    return p["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("engine", "flag"),
    [
        ("vllm", "--gpu-memory-utilization"),
        ("sglang", "--mem-fraction-static"),
        ("tgi", "--cuda-memory-fraction"),
    ],
)
def test_each_engine_gets_the_slices_fraction_of_the_gpu_it_landed_on(engine, flag):
    args = server(pod(spec(engine=engine)))["args"]
    fraction = float(flag_value(args, [flag]))
    assert fraction == 0.244  # 20000 / 81920 = 0.2441..., rounded down
    assert fraction * A100 <= 20000


def test_vllm_with_known_weights_gets_the_kv_budget_left_in_the_slice():
    args = server(pod(spec(modelMemoryMiB=15400)))["args"]
    assert (
        int(flag_value(args, ["--kv-cache-memory-bytes"])) == (20000 - 15400 - OVERHEAD_MIB) * MIB
    )


def test_whole_gpu_replicas_get_tensor_parallel_and_no_memory_fraction():
    the_spec = spec(gpu={"gpus": 2})
    args = server(pod(the_spec, Placement("n", (0, 1), (), 2 * A100)))["args"]
    assert flag_value(args, ["--tensor-parallel-size"]) == "2"
    assert flag_value(args, ["--gpu-memory-utilization"]) is None


def test_a_flag_the_user_set_within_the_slice_is_kept_as_written():
    got = Slice(1, 20000, A100, whole=False)
    out = engine_args("vllm", ["--gpu-memory-utilization=0.2"], got, 8000, None)
    assert "--gpu-memory-utilization" not in out


def test_user_args_that_contradict_the_slice_name_the_flag():
    check = dict(port=8000, slice_mib=20000, gpus=1, gpu_sizes=[23028, A100], model_mib=None)
    why = contradiction("vllm", ["--gpu-memory-utilization", "0.95"], **check)
    assert why and "--gpu-memory-utilization 0.95" in why and "81920" in why
    assert contradiction("vllm", ["--gpu-memory-utilization", "0.2"], **check) is None
    assert "--tensor-parallel-size" in contradiction("vllm", ["-tp", "2"], **check)
    assert "--port" in contradiction("vllm", ["--port", "9000"], **check)
    assert "--kv-cache-memory-bytes" in contradiction(
        "vllm", ["--kv-cache-memory-bytes", str(30000 * MIB)], **check
    )
    assert "--mem-fraction-static" in contradiction(
        "sglang", ["--mem-fraction-static", "0.9"], **check
    )
    whole = dict(check, slice_mib=None, gpus=4)
    assert "--num-shard" in contradiction("tgi", ["--num-shard", "2"], **whole)
    assert contradiction("tgi", ["--num-shard", "4"], **whole) is None


def test_weights_that_leave_no_kv_cache_are_refused():
    why = contradiction(
        "vllm", [], port=8000, slice_mib=16000, gpus=1, gpu_sizes=[A100], model_mib=15400
    )
    assert why and "modelMemoryMiB 15400" in why


def test_probes_default_to_the_engines_health_and_take_user_overrides():
    c = server(pod(spec(probes={"readiness": {"periodSeconds": 2}})))
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/health", "port": 8000},
        "periodSeconds": 2,
        "failureThreshold": 3,
        "timeoutSeconds": 5,
    }
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800  # a 70B load
    tgi = server(pod(spec(engine="tgi", probes={"liveness": {"httpGet": {"path": "/ping"}}})))
    assert tgi["livenessProbe"]["httpGet"] == {"port": 80, "path": "/ping"}
    assert tgi["ports"] == [{"name": "http", "containerPort": 80}]


def test_template_parts_reach_the_pod_and_the_operators_win():
    the_spec = spec(
        env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
        template={
            "metadata": {"labels": {"team": "a"}, "annotations": {"x": "y"}},
            "spec": {
                "serviceAccountName": "llm",
                "imagePullSecrets": [{"name": "regcred"}],
                "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "models"}}],
                "volumeMounts": [{"name": "cache", "mountPath": "/models"}],
                "securityContext": {"runAsNonRoot": True},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "nodeSelector": {"zone": "a"},
                "sidecars": [{"name": "proxy", "image": "envoy"}],
            },
        },
    )
    p = pod(the_spec)
    body, c = p["spec"], server(p)
    assert p["metadata"]["labels"]["team"] == "a" and p["metadata"]["annotations"]["x"] == "y"
    assert body["serviceAccountName"] == "llm" and body["imagePullSecrets"] == [{"name": "regcred"}]
    assert {v["name"] for v in body["volumes"]} == {"cache", podtemplate.SHM}
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/models", "/dev/shm"}
    assert {"key": "dedicated", "operator": "Exists"} in body["tolerations"]
    assert body["nodeSelector"] == {"zone": "a"} and body["securityContext"]["runAsNonRoot"]
    assert [x["name"] for x in body["containers"]] == ["server", "proxy"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in c[
        "env"
    ]
    assert body["affinity"]["nodeAffinity"]  # the pinning is the operator's


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        (
            {"template": {"metadata": {"labels": {"gpucost.dev/replica": "9"}}}},
            'spec.template.metadata.labels["gpucost.dev/replica"]',
        ),
        ({"env": [{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}]}, "spec.env[0].name"),
        (
            {"template": {"spec": {"sidecars": [{"name": "server", "image": "x"}]}}},
            "spec.template.spec.sidecars[0].name",
        ),
        (
            {
                "template": {
                    "spec": {
                        "sidecars": [
                            {
                                "name": "s",
                                "image": "x",
                                "resources": {"limits": {"nvidia.com/gpu": 1}},
                            }
                        ]
                    }
                }
            },
            "spec.template.spec.sidecars[0].resources.limits.nvidia.com/gpu",
        ),
    ],
)
def test_a_template_that_fights_the_operator_is_refused_with_the_field_path(extra, path):
    why = podtemplate.template_conflict(spec(**extra))
    assert why and why.startswith(path)


def test_a_clean_template_has_no_conflict():
    assert (
        podtemplate.template_conflict(spec(template={"spec": {"sidecars": [{"name": "p"}]}}))
        is None
    )
