from gpucost import manifests, names
from gpucost.api.compressionjob import CompressionJobSpec
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.core.placement import Placement
from tests.builders import inference_pool_spec


def node_pool(**spec) -> GPUNodePoolSpec:
    return GPUNodePoolSpec.model_validate(
        {
            "instanceType": "p4d",
            "capacityType": "on-demand",
            "pricePerHour": 32.0,
            "cpu": "96",
            "memory": "1152Gi",
            "gpu": {"model": "NVIDIA-A100-SXM4-80GB", "memoryMiB": 81920, "count": 8},
            "taints": [
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                {"key": "spot", "effect": "NoExecute"},
            ],
            **spec,
        }
    )


def build(placement, isolation="nvml-limit", **spec):
    return manifests.replica_pod(
        pool="web",
        namespace="ns",
        uid="uid-1",
        spec=InferencePoolSpec.model_validate(inference_pool_spec(**spec)),
        replica=3,
        revision="rev1",
        placement=placement,
        node_pool=node_pool(isolation=isolation),
    )


def test_replica_pod_is_pinned_to_its_gpu_and_owned_by_the_pool():
    pod = build(
        Placement("node-a", (2,), ("GPU-abc",), 20000),
        modelUri="s3://m",
        env=[{"name": "A", "value": "1"}],
    )
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "web-3" and meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["annotations"][names.ANNOTATION_GPU_INDICES] == "2"
    assert meta["annotations"][names.ANNOTATION_GPU_MEMORY] == "20000"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchFields"][0]["values"] == ["node-a"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env == {
        "A": "1",
        "NVIDIA_VISIBLE_DEVICES": "GPU-abc",
        "CUDA_VISIBLE_DEVICES": "GPU-abc",
        "MODEL_URI": "s3://m",
        names.ENV_GPU_MEMORY_MIB: "20000",
        names.ENV_GPU_MEMORY_FRACTION: "0.244",
    }
    assert meta["labels"][names.LABEL_REVISION] == "rev1"
    assert meta["labels"][names.LABEL_POOL] == "web"
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


def test_an_mps_pool_pins_each_replicas_memory_and_sm_share_in_its_environment():
    pod = build(Placement("node-a", (2,), ("GPU-abc",), 20480), isolation="mps")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert (
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20480M"
    )  # device 0 as the container sees it
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"  # a quarter of an 80 GiB GPU
    two = build(Placement("node-a", (4, 5), (), 163840), isolation="mps", gpu={"gpus": 2})
    env = {e["name"]: e["value"] for e in two["spec"]["containers"][0]["env"]}
    assert (
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=81920M,1=81920M"
        and env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "100"
    )


def worker_job(**spec):
    return manifests.compression_job(
        name="shrink",
        namespace="ns",
        uid="uid-2",
        spec=CompressionJobSpec.model_validate(
            {
                "modelUri": "s3://models/llama",
                "dataset": "s3://models/text.txt",
                "outputUri": "s3://models/out",
                "method": {"quantize": {}},
                "gpu": {"memoryMiB": 8000},
                **spec,
            }
        ),
        attempt=2,
        placement=Placement("node-a", (0,), ("GPU-abc",), 8000),
        node_pool=node_pool(),
    )["spec"]["template"]["spec"]["containers"][0]


def test_a_worker_with_remote_uris_gets_its_secret_endpoint_and_staging_on_the_claim():
    c = worker_job(
        credentialsSecret="team-s3",
        s3EndpointURL="http://seaweedfs.storage:8333",
        storage={"claimName": "scratch", "mountPath": "/data"},
    )
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://seaweedfs.storage:8333"
    assert env["GPUCOST_SCRATCH"] == "/data/.gpucost/staging"
    assert env["GPUCOST_CREDENTIALS_SECRET"] == "team-s3"
    # optional, so a missing Secret is the worker's one-line error, not a stuck pod
    assert c["envFrom"] == [{"secretRef": {"name": "team-s3", "optional": True}}]
    args = c["args"]
    assert args[args.index("--checkpoint-dir") + 1] == "/data/.gpucost/checkpoints/shrink"


def test_a_worker_without_a_claim_or_secret_has_no_checkpoints_and_no_env_from():
    c = worker_job()
    assert "--checkpoint-dir" not in c["args"] and "envFrom" not in c
    named = {e["name"] for e in c["env"]}
    assert "GPUCOST_ATTEMPT" in named and not named & {"AWS_ENDPOINT_URL", "GPUCOST_SCRATCH"}
    local = worker_job(outputUri="file:///data/out/")["args"]
    assert local[local.index("--checkpoint-dir") + 1] == "file:///data/out/checkpoints"
