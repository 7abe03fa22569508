"""Label, annotation, resource and env names the operator writes; documented in the chart README.

One module so the operator, the agent and users' tooling agree on the exact strings.
"""

DOMAIN = "gpucost.dev"

# Node labels. The nvidia.com names are NVIDIA GPU feature discovery's, so real GPU nodes work as-
# is.
LABEL_NODEPOOL = f"{DOMAIN}/nodepool"
LABEL_CAPACITY_TYPE = "karpenter.sh/capacity-type"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_DRIVER_VERSION = "nvidia.com/cuda.driver-version.full"
# Node annotation: JSON list of {"index", "uuid", "model", "memoryMiB"} published by the node agent,
# with "mig": true for a GPU in MIG mode and "healthy": false plus a "reason" for one that is lost.
ANNOTATION_GPUS = f"{DOMAIN}/gpus"

# Node annotation the kwok provider sets (a Go duration, e.g. "30s"): KWOK keeps the node NotReady
# that long, as a cloud instance is while it boots. Named like KWOK's own per-stage delay knobs.
KWOK_BOOT_DELAY = "node-initialize.stage.kwok.x-k8s.io/delay"
# Pod annotation (a Go duration): KWOK keeps a Job's pod Running that long before it completes, as
# a real worker runs (tests set it through CompressionJob.spec.podAnnotations).
KWOK_RUN_TIME = "pod-complete.stage.kwok.x-k8s.io/delay"

# Extended resources. Pods ask for GPU memory in MiB so the real scheduler also refuses to
# over-commit a node even if two operators ever disagreed about a GPU.
RESOURCE_GPU = "nvidia.com/gpu"
RESOURCE_GPU_MEMORY = f"{DOMAIN}/gpu-memory"

# Pod labels (selectable) and annotations (the placement).
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "gpu-cost-operator"
LABEL_OWNER_UID = f"{DOMAIN}/owner-uid"
LABEL_REPLICA = f"{DOMAIN}/replica"
# Replica pods: the InferencePool's name (what its Service and the inference extension select) and
# the hash of the spec the pod was built from (Deployment's pod-template-hash).
LABEL_POOL = f"{DOMAIN}/inferencepool"
LABEL_REVISION = f"{DOMAIN}/revision"
# Env vars every replica gets, so a custom engine can size itself to its slice.
ENV_GPU_MEMORY_MIB = "GPUCOST_GPU_MEMORY_MIB"
ENV_GPU_MEMORY_FRACTION = "GPUCOST_GPU_MEMORY_FRACTION"
ANNOTATION_OWNER = f"{DOMAIN}/inferencepool"
ANNOTATION_NODE = f"{DOMAIN}/node"
ANNOTATION_GPU_INDICES = f"{DOMAIN}/gpu-indices"
ANNOTATION_GPU_UUIDS = f"{DOMAIN}/gpu-uuids"
# MiB reserved on each GPU in gpu-indices (a whole GPU reserves all of its memory).
ANNOTATION_GPU_MEMORY = f"{DOMAIN}/gpu-memory-mib"

# The NVIDIA container runtime exposes the devices named here; CUDA accepts UUIDs too, so the same
# value is right whether the container sees one GPU or all of them.
ENV_VISIBLE_DEVICES = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")

# Autoscaler bookkeeping on Nodes, so a restarted operator carries on where the last one stopped.
ANNOTATION_IDLE_SINCE = f"{DOMAIN}/idle-since"  # RFC 3339: no pod has used the node's GPUs since
ANNOTATION_DISRUPTION = f"{DOMAIN}/disruption"  # why the node is cordoned and being drained away
# RFC 3339: since when the node's work has fit elsewhere (consolidateAfter counts from here).
ANNOTATION_CONSOLIDATABLE_SINCE = f"{DOMAIN}/consolidatable-since"
# JSON {"since": epoch, "message": why}: consolidation launched this node's replacement; drained
# once the replacement has booted. Written before the launch, so a restart finishes the move.
ANNOTATION_REPLACING = f"{DOMAIN}/replacing"
# On a GPUNodePool, RFC 3339: its provider failed to launch; no new node is asked of it until then.
ANNOTATION_LAUNCH_COOLDOWN = f"{DOMAIN}/launch-cooldown-until"
# Taints that mean "the cloud is taking this node back": ours, and the AWS node termination
# handler's.
INTERRUPTION_TAINTS = (f"{DOMAIN}/interruption", "aws-node-termination-handler/spot-itn")
# On a node the autoscaler launched: JSON {"owners": [workload, ...], "until": epoch seconds}. Until
# then only those workloads are placed there, so the node bought for one pool's replicas is not
# taken by another's that a cheaper pool was already booting for (Karpenter's nomination).
ANNOTATION_RESERVED_FOR = f"{DOMAIN}/reserved-for"


def workload(kind: str, namespace: str, name: str) -> str:
    """How a workload is named in reservations, plans and Events."""
    return f"{kind} {namespace}/{name}"


# On an InferencePool, one per gateway replica (the suffix is its id): JSON {"inFlight", "held",
# "lastRequest", "at"}. The operator sums the fresh ones into the pool's load; no leader needed.
DEMAND_ANNOTATION_PREFIX = "gateway.gpucost.dev/"

# Pod annotations that keep a node (value "true", or "false" for the cluster-autoscaler's).
DO_NOT_DISRUPT = {
    f"{DOMAIN}/do-not-disrupt": "true",
    "karpenter.sh/do-not-disrupt": "true",
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
}
# A plain GPU pod with this annotation "true" may go to spot pools (otherwise on-demand only,
# unless its nodeSelector names a capacity type).
ANNOTATION_INTERRUPTIBLE = f"{DOMAIN}/interruptible"
