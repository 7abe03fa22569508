"""InferencePool: model-serving replicas, each asking for a GPU memory slice or whole GPUs."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from gpucost.api.common import CapacityType, Condition, Costed, GPUAsk, Quantity, Wire


class EnvVar(Wire):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str = Field("", max_length=32768)


class ContainerResources(Wire):
    cpu: Quantity | None = Field(None, description="CPU request per replica.")
    memory: Quantity | None = Field(None, description="Memory request (and limit) per replica.")


class InferencePoolSpec(Wire):
    image: str = Field(min_length=1, max_length=1024, description="Serving container image.")
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    port: int | None = Field(
        None, ge=1, le=65535, description="Container port the server listens on."
    )
    model_uri: str | None = Field(
        None, max_length=2048, description="Model to serve; passed to the container as MODEL_URI."
    )
    replicas: int = Field(1, ge=0, le=1000)
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
    gpu_models: list[str] = Field(
        default_factory=list,
        description="Allowed GPU models (nvidia.com/gpu.product); empty allows any.",
    )
    node_pool_selector: dict[str, str] = Field(
        default_factory=dict, description="Only GPUNodePools whose labels match all of these."
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
        return self


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


class InferencePoolStatus(Costed):
    replicas: int = Field(0, ge=0, description="Replicas placed (pods that exist).")
    ready_replicas: int = Field(0, ge=0, description="Replicas whose pod is Ready.")
    unplaced_replicas: int = Field(0, ge=0, description="Replicas that fit on no GPU right now.")
    placements: list[ReplicaPlacement] = Field(default_factory=list)
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)


class InferencePool(Wire):
    spec: InferencePoolSpec
    status: InferencePoolStatus | None = None
