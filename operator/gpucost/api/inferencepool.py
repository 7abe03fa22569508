"""InferencePool: model-serving replicas, each asking for a GPU memory slice or whole GPUs."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from gpucost.api.autoscaling import Autoscaling, AutoscalingStatus
from gpucost.api.common import CapacityType, Condition, Costed, GPUAsk, Quantity, Wire
from gpucost.api.serving import (
    DisruptionBudget,
    Engine,
    InferenceExtension,
    Opaque,
    Probes,
    ServiceOptions,
    Strategy,
    Template,
)

DEFAULT_PORTS = {Engine.VLLM: 8000, Engine.SGLANG: 30000, Engine.TGI: 80, Engine.CUSTOM: 8000}


class EnvVar(Wire):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = Field(None, max_length=32768)
    value_from: Opaque | None = Field(
        None, description="core/v1 EnvVarSource: secretKeyRef (an HF token), configMapKeyRef, ..."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.value) && has(self.valueFrom))",
                    "message": "set value or valueFrom, not both",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _one_source(self) -> "EnvVar":
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self


class QualityGate(Wire):
    max_perplexity_increase_percent: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="The compressed model's held-out perplexity may be at most this much higher "
        "than the original's (causal LMs).",
    )
    max_accuracy_drop_points: float = Field(
        1.0,
        ge=0,
        le=100,
        description="A classifier's held-out accuracy may be at most this many percentage points "
        "lower than the original's.",
    )
    min_accuracy: float | None = Field(
        None, ge=0, le=1, description="And a classifier's held-out accuracy at least this (0-1)."
    )


class ModelFrom(Wire):
    """Serve what a CompressionJob made, once it succeeded and passed the gate."""

    compression_job: str = Field(min_length=1, max_length=253, description="In this namespace.")
    resize_slice: bool = Field(
        True,
        description="Set each replica's slice to the job's recommendation (weights + KV cache at "
        "its spec.serving + overhead). False keeps gpu.memoryMiB as it is (pinned).",
    )


class AdoptedModel(Wire):
    """What the pool serves instead of spec.modelUri and gpu.memoryMiB, kept in the status so
    that every reader (placement, the autoscaler's asks, cost) sees the same, and a deleted job
    does not roll the pool back."""

    compression_job: str
    job_uid: str
    model_uri: str
    memory_mib: int | None = Field(
        None, alias="memoryMiB", ge=1, description="The slice per replica; None: the spec's."
    )
    model_memory_mib: int = Field(alias="modelMemoryMiB", ge=1, description="Its weights.")
    scheme: str | None = Field(None, description="The quantization scheme, or prune/distill.")
    weight_ratio: float | None = None
    perplexity_increase_percent: float | None = None
    accuracy_change_points: float | None = None
    spec_memory_mib: int | None = Field(
        None, alias="specMemoryMiB", description="gpu.memoryMiB before the adoption."
    )
    cost_per_replica_hour_before: float | None = Field(
        None,
        ge=0,
        description="USD per hour a replica's spec slice costs on the node type it runs on (its "
        "share of the node's price by GPU memory).",
    )
    cost_per_replica_hour_after: float | None = Field(
        None, ge=0, description="The same for the adopted slice: what each replica saves."
    )


class ContainerResources(Wire):
    cpu: Quantity | None = Field(None, description="CPU request per replica.")
    memory: Quantity | None = Field(None, description="Memory request (and limit) per replica.")


class InferencePoolSpec(Wire):
    image: str = Field(min_length=1, max_length=1024, description="Serving container image.")
    engine: Engine = Field(
        Engine.VLLM,
        description="Serving engine: the operator passes it its GPU slice (vLLM "
        "--gpu-memory-utilization/--kv-cache-memory-bytes, SGLang --mem-fraction-static, TGI "
        "--cuda-memory-fraction) and tensor parallelism, and sets its port and probes. custom: "
        "only the GPUCOST_GPU_MEMORY_* env vars.",
    )
    command: list[str] = Field(default_factory=list, description="Overrides the entrypoint.")
    args: list[str] = Field(
        default_factory=list,
        description="Engine arguments; the operator appends the slice's memory, parallelism "
        "and port flags the user did not set.",
    )
    env: list[EnvVar] = Field(default_factory=list, description="The server's environment.")
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Container port the server listens on (default: the engine's: vLLM 8000, "
        "SGLang 30000, TGI 80, custom 8000).",
    )
    model_memory_mib: int | None = Field(
        None,
        alias="modelMemoryMiB",
        ge=1,
        description="GPU memory the weights take per GPU. With it a vLLM slice replica gets "
        "--kv-cache-memory-bytes = slice - weights - overhead, a KV budget that does not depend "
        "on the GPU's size or its co-tenants.",
    )
    model_uri: str | None = Field(
        None, max_length=2048, description="Model to serve; passed to the container as MODEL_URI."
    )
    replicas: int = Field(1, ge=0, le=1000, description="Serving replicas wanted.")
    min_replicas: int | None = Field(
        None, ge=0, le=1000, description="Lower bound for autoscaling."
    )
    max_replicas: int | None = Field(
        None, ge=0, le=1000, description="Upper bound for autoscaling."
    )
    gpu: GPUAsk = Field(description="GPU ask per replica.")
    resources: ContainerResources = Field(
        default_factory=ContainerResources, json_schema_extra={"default": {}}
    )
    capacity_types: list[CapacityType] = Field(
        default=[CapacityType.ON_DEMAND.value],
        min_length=1,
        description="Capacity types replicas may run on. Serving is not interruptible by default, "
        "so only on-demand.",
    )
    on_demand_base: int = Field(
        0,
        ge=0,
        le=1000,
        description="With spot among capacityTypes: this many replicas of the current revision "
        "run on on-demand or reserved capacity only, so a wave of spot reclaims never takes the "
        "pool below them; the rest go wherever costs least. A rolling update places its first "
        "new replicas there, and scaling down removes spot replicas before the base. Applies as "
        "replicas are placed: replicas already running are not moved.",
    )
    gpu_models: list[str] = Field(
        default_factory=list,
        description="Allowed GPU models (nvidia.com/gpu.product); empty allows any.",
    )
    node_pool_selector: dict[str, str] = Field(
        default_factory=dict, description="Only GPUNodePools whose labels match all of these."
    )
    probes: Probes = Field(
        default_factory=Probes,
        json_schema_extra={"default": {}},
        description="Readiness, liveness and startup probes over the engine's defaults.",
    )
    strategy: Strategy = Field(
        default_factory=Strategy,
        json_schema_extra={"default": {}},
        description="How a new revision rolls out.",
    )
    progress_deadline_seconds: int = Field(
        1800,
        ge=1,
        description="A rollout that makes no progress for this long stops with "
        "Progressing=False (ProgressDeadlineExceeded); the old replicas keep serving.",
    )
    template: Template = Field(
        default_factory=Template,
        json_schema_extra={"default": {}},
        description="Volumes, secrets, service account, security context, tolerations, "
        "sidecars and more for the replica pods.",
    )
    service: ServiceOptions = Field(
        default_factory=ServiceOptions,
        json_schema_extra={"default": {}},
        description="The pool's Service.",
    )
    inference_extension: InferenceExtension = Field(
        default_factory=InferenceExtension,
        json_schema_extra={"default": {}},
        description="The Gateway API Inference Extension InferencePool beside this one.",
    )
    served_model_name: str | None = Field(
        None,
        max_length=253,
        description="The model name clients ask the gateway for (default: the pool's name).",
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Requests the gateway sends one replica at a time; more wait at the gateway "
        "(held: they count as demand) for the first replica with room, new or freed, instead "
        "of queueing inside a busy engine (as Knative's containerConcurrency). Unset: no limit.",
    )
    autoscaling: Autoscaling | None = Field(
        None, description="Replicas from the load, down to zero when idle (see Autoscaling)."
    )
    pod_disruption_budget: DisruptionBudget | None = Field(
        None, description="A PodDisruptionBudget over the replicas (none by default)."
    )
    model_from: ModelFrom | None = Field(
        None,
        description="Roll out to a CompressionJob's output (and its smaller slice) once it "
        "succeeds and passes qualityGate; until then (or if it fails) the pool serves modelUri.",
    )
    quality_gate: QualityGate = Field(
        default_factory=QualityGate,
        json_schema_extra={"default": {}},
        description="What a CompressionJob's results must meet for modelFrom to adopt them.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas "
                    "<= self.maxReplicas",
                    "message": "minReplicas must not exceed maxReplicas",
                },
                {
                    "rule": "!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
                    "message": "replicas must not exceed maxReplicas",
                },
                {
                    "rule": "!has(self.minReplicas) || self.replicas >= self.minReplicas",
                    "message": "replicas must not be below minReplicas",
                },
                {
                    "rule": "!has(self.onDemandBase) || self.onDemandBase == 0 || "
                    "'on-demand' in self.capacityTypes",
                    "message": "onDemandBase needs on-demand among capacityTypes",
                },
                {
                    "rule": "!has(self.strategy) || !has(self.strategy.rollingUpdate) || "
                    "!(string(self.strategy.rollingUpdate.maxSurge) in ['0', '0%'] && "
                    "string(self.strategy.rollingUpdate.maxUnavailable) in ['0', '0%'])",
                    "message": "maxSurge and maxUnavailable cannot both be 0",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _bounds(self) -> "InferencePoolSpec":
        low = self.min_replicas if self.min_replicas is not None else 0
        high = self.max_replicas if self.max_replicas is not None else self.replicas
        if low > high:
            raise ValueError("minReplicas must not exceed maxReplicas")
        if not low <= self.replicas <= high:
            raise ValueError("replicas must be within [minReplicas, maxReplicas]")
        rolling = self.strategy.rolling_update
        if rolling.max_surge in (0, "0%") and rolling.max_unavailable in (0, "0%"):
            raise ValueError("maxSurge and maxUnavailable cannot both be 0")
        if self.on_demand_base and CapacityType.ON_DEMAND.value not in self.capacity_types:
            raise ValueError("onDemandBase needs on-demand among capacityTypes")
        return self

    def base_size(self, replicas: int) -> int:
        """Replicas of ``replicas`` that are on-demand only (0 when spot is not allowed anyway)."""
        spot = CapacityType.SPOT.value in self.capacity_types
        return min(replicas, self.on_demand_base) if spot else 0

    @property
    def serving_port(self) -> int:
        return self.port or DEFAULT_PORTS[Engine(self.engine)]


class ReplicaPlacement(Wire):
    replica: int = Field(ge=0)
    pod: str
    node: str
    gpu_indices: list[int] = Field(default_factory=list)
    gpu_uuids: list[str] = Field(default_factory=list, alias="gpuUUIDs")
    memory_mib: int = Field(
        alias="memoryMiB", ge=0, description="GPU memory reserved, summed over its GPUs."
    )
    phase: str = Field("Pending", description="Pod phase, or Terminating.")
    ready: bool = Field(False, description="The pod's Ready condition.")


class TokenCost(Wire):
    """What the pool's serving cost per million generated tokens, over a trailing window."""

    window_seconds: int = Field(ge=1, description="The trailing window measured.")
    generated_tokens: float = Field(ge=0, description="Tokens generated in the window.")
    cost: float = Field(ge=0, description="USD the pool's replicas cost in the window.")
    usd_per_million_tokens: float | None = Field(
        None, ge=0, description="cost / generatedTokens × 10^6; unset when nothing was generated."
    )
    source: str = Field(
        description="gateway (gpucost gateway's count) or vllm (the replicas' own counter)."
    )
    measured_at: str = Field(description="RFC 3339.")


class InferencePoolStatus(Costed):
    replicas: int = Field(0, ge=0, description="Replicas placed (pods that exist).")
    ready_replicas: int = Field(0, ge=0, description="Replicas whose pod is Ready.")
    updated_replicas: int = Field(0, ge=0, description="Replicas of updateRevision.")
    updated_ready_replicas: int = Field(0, ge=0, description="Ready replicas of updateRevision.")
    current_revision: str | None = Field(
        None, description="The revision the pool last served entirely from."
    )
    update_revision: str | None = Field(
        None, description="Hash of everything that shapes a replica pod, from the current spec."
    )
    last_progress_time: str | None = Field(
        None, description="RFC 3339: when the rollout last created or readied a replica."
    )
    selector: str | None = Field(
        None, description="Label selector of the replicas (the scale subresource's)."
    )
    endpoint: str | None = Field(None, description="The pool's Service URL inside the cluster.")
    autoscaling: AutoscalingStatus | None = Field(
        None, description="The load-driven decision, when spec.autoscaling is set."
    )
    adopted_model: AdoptedModel | None = Field(
        None, description="The CompressionJob output served (spec.modelFrom), once adopted."
    )
    tokens: TokenCost | None = Field(
        None, description="$ per million generated tokens (with a Prometheus; see README)."
    )
    unplaced_replicas: int = Field(0, ge=0, description="Replicas that fit on no GPU right now.")
    placements: list[ReplicaPlacement] = Field(default_factory=list)
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)


class InferencePool(Wire):
    spec: InferencePoolSpec
    status: InferencePoolStatus | None = None
