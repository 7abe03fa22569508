"""Pure builders of the Kubernetes objects the operator creates."""

from __future__ import annotations

import json
from typing import Any

from gpucost import names, podtemplate
from gpucost.api.compressionjob import CompressionJobSpec
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import GPUNodePoolSpec, IsolationMode
from gpucost.core.engine import Slice
from gpucost.core.placement import Placement


def replica_pod_name(pool: str, replica: int) -> str:
    return f"{pool}-{replica}"


def mps_env(gpus: int, mib_per_gpu: int, gpu_mib: int) -> list[dict[str, str]]:
    """MPS limits for ``isolation: mps`` pools: memory pinned per device as the container numbers
    them (0..n-1 behind NVIDIA_VISIBLE_DEVICES), and a share of the SMs in proportion to the
    slice."""
    return [
        {
            "name": "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
            "value": ",".join(f"{i}={mib_per_gpu}M" for i in range(gpus)),
        },
        {
            "name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
            "value": str(max(1, min(100, round(100 * mib_per_gpu / gpu_mib)))),
        },
    ]


def replica_pod(
    *,
    pool: str,
    namespace: str,
    uid: str,
    spec: InferencePoolSpec,
    replica: int,
    revision: str,
    placement: Placement,
    node_pool: GPUNodePoolSpec,
) -> dict[str, Any]:
    """One serving replica pinned to the GPU(s) the placement chose, tolerating its pool's
    taints, with the engine told its slice of the GPU it landed on."""
    gpus = len(placement.gpu_indices)
    got = Slice(
        gpus=gpus,
        mib_per_gpu=placement.memory_mib // gpus,
        gpu_mib=node_pool.gpu.memory_mib,
        whole=spec.gpu.gpus is not None,
    )
    pod = placed_pod(
        owner=("InferencePool", pool, uid),
        namespace=namespace,
        container=podtemplate.serving_container(spec, got, spec.served_model_name or pool),
        placement=placement,
        node_pool=node_pool,
        restart_policy="Always",
    )
    pod["metadata"]["name"] = replica_pod_name(pool, replica)
    pod["metadata"]["labels"].update(
        {
            names.LABEL_REPLICA: str(replica),
            names.LABEL_POOL: pool,
            names.LABEL_REVISION: revision,
        }
    )
    return podtemplate.apply_template(pod, spec)


def placed_pod(
    *,
    owner: tuple[str, str, str],
    namespace: str,
    container: dict[str, Any],
    placement: Placement,
    node_pool: GPUNodePoolSpec,
    restart_policy: str,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod (or a Job's pod template) pinned to the GPUs a placement chose, owned by ``owner``
    (kind, name, uid): the annotations the operator and the agent read back, the visible devices,
    the gpu-memory resource, MPS limits on an mps pool, and the pool's tolerations."""
    kind, name, uid = owner
    devices = ",".join(placement.gpu_uuids) or ",".join(str(i) for i in placement.gpu_indices)
    mib_per_gpu = placement.memory_mib // len(placement.gpu_indices)
    env = list(container.get("env", [])) + [
        {"name": n, "value": devices} for n in names.ENV_VISIBLE_DEVICES
    ]
    if node_pool.isolation == IsolationMode.MPS.value:
        env += mps_env(len(placement.gpu_indices), mib_per_gpu, node_pool.gpu.memory_mib)
    resources = container.get("resources") or {}
    container = {
        **container,
        "env": env,
        "resources": {
            "requests": {
                **resources.get("requests", {}),
                names.RESOURCE_GPU_MEMORY: str(placement.memory_mib),
            },
            "limits": {
                **resources.get("limits", {}),
                names.RESOURCE_GPU_MEMORY: str(placement.memory_mib),
            },
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_OWNER_UID: uid},
            "annotations": {
                **(annotations or {}),
                names.ANNOTATION_OWNER: name,
                names.ANNOTATION_NODE: placement.node,
                names.ANNOTATION_GPU_INDICES: ",".join(str(i) for i in placement.gpu_indices),
                names.ANNOTATION_GPU_UUIDS: ",".join(placement.gpu_uuids),
                names.ANNOTATION_GPU_MEMORY: str(mib_per_gpu),
            },
            "ownerReferences": [
                {
                    "apiVersion": "gpucost.dev/v1alpha1",
                    "kind": kind,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [container],
            # Pinned through the scheduler, not spec.nodeName, so taints, node resources and the
            # gpu-memory extended resource are still checked by the real scheduler.
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {
                                        "key": "metadata.name",
                                        "operator": "In",
                                        "values": [placement.node],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            "tolerations": [t.toleration() for t in node_pool.taints],
            "restartPolicy": restart_policy,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        },
    }


def checkpoint_dir(spec: CompressionJobSpec, name: str) -> str | None:
    """Beside a local output; on the claim for a remote one (a bucket is no place for files
    rewritten every few steps); nowhere when there is no claim, so the job restarts from scratch."""
    if "://" not in spec.output_uri or spec.output_uri.startswith("file://"):
        return spec.output_uri.rstrip("/") + "/checkpoints"
    if spec.storage:
        return _on_claim(spec, f"checkpoints/{name}")
    return None


def _on_claim(spec: CompressionJobSpec, path: str) -> str:
    """Where the operator keeps a job's working files on its claim, out of the user's paths."""
    assert spec.storage is not None
    return f"{spec.storage.mount_path.rstrip('/')}/.gpucost/{path}"


def _worker_env(spec: CompressionJobSpec, attempt: int) -> list[dict[str, Any]]:
    env = [{"name": "GPUCOST_ATTEMPT", "value": str(attempt)}]
    if spec.credentials_secret:
        env.append({"name": "GPUCOST_CREDENTIALS_SECRET", "value": spec.credentials_secret})
    if spec.s3_endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.s3_endpoint_url})
    if spec.storage:
        env.append({"name": "GPUCOST_SCRATCH", "value": _on_claim(spec, "staging")})
    return env


def compression_job(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: CompressionJobSpec,
    attempt: int,
    placement: Placement,
    node_pool: GPUNodePoolSpec,
) -> dict[str, Any]:
    """One attempt of a CompressionJob: a batch/v1 Job (owned by it) whose single pod is pinned to
    the placement. backoffLimit 0: the operator decides what a failure means (interruption → the
    next attempt elsewhere, from the checkpoint; the worker's own error → Failed)."""
    container = {
        "name": "compress",
        "image": spec.image,
        "args": [
            "compress",
            "--model",
            spec.model_uri,
            "--dataset",
            spec.dataset,
            "--output",
            spec.output_uri,
            "--method",
            json.dumps(spec.method.wire(), separators=(",", ":")),
            "--serving",
            json.dumps(spec.serving.wire(), separators=(",", ":")),
            *(["--checkpoint-dir", ckpt] if (ckpt := checkpoint_dir(spec, name)) else []),
        ],
        "env": _worker_env(spec, attempt),
        # optional: a missing Secret is the worker's one-line "no credentials", not a pod stuck
        # in CreateContainerConfigError
        **(
            {"envFrom": [{"secretRef": {"name": spec.credentials_secret, "optional": True}}]}
            if spec.credentials_secret
            else {}
        ),
        # The worker's last line on failure becomes the job's status message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = placed_pod(
        owner=("CompressionJob", name, uid),
        namespace=namespace,
        container=container,
        placement=placement,
        node_pool=node_pool,
        restart_policy="Never",
        # Consolidation would only cost the job a restart from its checkpoint: keep its node while
        # it
        # runs (Karpenter's advice for batch work). A reclaimed spot node still drains.
        annotations={**spec.pod_annotations, f"{names.DOMAIN}/do-not-disrupt": "true"},
    )
    if spec.storage:
        pod["spec"]["volumes"] = [
            {"name": "storage", "persistentVolumeClaim": {"claimName": spec.storage.claim_name}}
        ]
        pod["spec"]["containers"][0]["volumeMounts"] = [
            {"name": "storage", "mountPath": spec.storage.mount_path}
        ]
    meta = pod["metadata"]
    owner = meta.pop("ownerReferences")  # the Job owns its pod; the CompressionJob owns the Job
    meta.pop("namespace")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name}-{attempt}",
            "namespace": namespace,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_OWNER_UID: uid},
            "ownerReferences": owner,
        },
        "spec": {"backoffLimit": 0, "template": {"metadata": meta, "spec": pod["spec"]}},
    }
