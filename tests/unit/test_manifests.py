from gpucost import manifests, names
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import Taint
from gpucost.core.placement import Placement
from tests.builders import inference_pool_spec


def build(placement, **spec):
    return manifests.replica_pod(
        pool="web",
        namespace="ns",
        uid="uid-1",
        spec=InferencePoolSpec.model_validate(inference_pool_spec(**spec)),
        replica=3,
        placement=placement,
        pool_taints=[Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule"), Taint(key="spot", effect="NoExecute")],
    )


def test_replica_pod_is_pinned_to_its_gpu_and_owned_by_the_pool():
    pod = build(Placement("node-a", (2,), ("GPU-abc",), 20000), modelUri="s3://m", env=[{"name": "A", "value": "1"}])
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "web-3" and meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["annotations"][names.ANNOTATION_GPU_INDICES] == "2"
    assert meta["annotations"][names.ANNOTATION_GPU_MEMORY] == "20000"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == ["node-a"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env == {"A": "1", "NVIDIA_VISIBLE_DEVICES": "GPU-abc", "CUDA_VISIBLE_DEVICES": "GPU-abc", "MODEL_URI": "s3://m"}
    assert spec["containers"][0]["resources"]["requests"][names.RESOURCE_GPU_MEMORY] == "20000"
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
    ]


def test_whole_gpus_without_uuids_fall_back_to_indices_and_split_memory_per_gpu():
    pod = build(Placement("node-a", (4, 5), (), 163840), gpu={"gpus": 2})
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "4,5"
    assert pod["metadata"]["annotations"][names.ANNOTATION_GPU_MEMORY] == "81920"
