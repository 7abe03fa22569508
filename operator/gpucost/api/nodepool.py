"""GPUNodePool: one kind of GPU node a pool can add, what it costs, and how its GPUs are shared."""

from __future__ import annotations

import enum

from pydantic import ConfigDict, Field, model_validator

from gpucost import names
from gpucost.api.common import CapacityType, Condition, Costed, Duration, Quantity, Wire


class SharingMode(str, enum.Enum):
    WHOLE = "whole"
    MEMORY_SLICE = "memory-slice"


class IsolationMode(str, enum.Enum):
    """How a memory slice is enforced on the node; the agent falls back down this list."""

    NVML_LIMIT = "nvml-limit"
    WATCH_EVICT = "watch-evict"
    MPS = "mps"
    NONE = "none"


class ConsolidationPolicy(str, enum.Enum):
    """Karpenter's names: whether busy nodes whose work fits elsewhere are removed too."""

    WHEN_EMPTY_OR_UNDERUTILIZED = "WhenEmptyOrUnderutilized"
    WHEN_EMPTY = "WhenEmpty"


class ProviderKind(str, enum.Enum):
    KWOK = "kwok"
    CLUSTER_API = "clusterAPI"
    KARPENTER = "karpenter"


class TaintEffect(str, enum.Enum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Taint(Wire):
    key: str = Field(max_length=316, min_length=1)
    value: str = Field("", max_length=63)
    effect: TaintEffect

    def toleration(self) -> dict[str, str]:
        """What the operator's pods carry for it: they are placed on the pool's nodes on purpose."""
        if self.value:
            return {
                "key": self.key,
                "operator": "Equal",
                "value": self.value,
                "effect": self.effect,
            }
        return {"key": self.key, "operator": "Exists", "effect": self.effect}


class NodeGPU(Wire):
    model: str = Field(
        min_length=1,
        max_length=63,
        description="GPU product as NVIDIA GPU feature discovery names it "
        "(nvidia.com/gpu.product), e.g. NVIDIA-A100-SXM4-80GB.",
    )
    memory_mib: int = Field(
        alias="memoryMiB", ge=1, le=1_048_576, description="Memory per GPU in MiB."
    )
    count: int = Field(ge=1, le=64, description="GPUs per node.")


class MachineDeploymentRef(Wire):
    namespace: str = Field("default", min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)


class KarpenterRef(Wire):
    node_pool: str = Field(
        min_length=1,
        max_length=253,
        description="The Karpenter NodePool (karpenter.sh/v1) this pool's NodeClaims belong to: "
        "they take its nodeClassRef, requirements, labels and taints.",
    )


class Provider(Wire):
    kind: ProviderKind = Field(
        ProviderKind.KWOK, description="What creates and deletes this pool's nodes."
    )
    boot_delay: Duration = Field(
        "0s", description="kwok only: how long a new node stays NotReady, to mimic instance boot."
    )
    machine_deployment: MachineDeploymentRef | None = Field(
        None,
        description="clusterAPI only: the Cluster API MachineDeployment whose replicas are this "
        "pool's nodes.",
    )
    karpenter: KarpenterRef | None = Field(
        None,
        description="karpenter only: the Karpenter NodePool whose NodeClaims gpucost creates, "
        "one per node, with the instance and capacity type it chose.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.kind) || self.kind != 'clusterAPI' || "
                    "has(self.machineDeployment)",
                    "message": "a clusterAPI provider names its machineDeployment",
                },
                {
                    "rule": "!has(self.kind) || self.kind != 'karpenter' || has(self.karpenter)",
                    "message": "a karpenter provider names its karpenter.nodePool",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _needs_target(self) -> "Provider":
        if self.kind == ProviderKind.CLUSTER_API and self.machine_deployment is None:
            raise ValueError("a clusterAPI provider names its machineDeployment")
        if self.kind == ProviderKind.KARPENTER and self.karpenter is None:
            raise ValueError("a karpenter provider names its karpenter.nodePool")
        return self


class CommitmentSpec(Wire):
    """A Savings Plan (or committed-use discount) covering this pool's on-demand nodes."""

    usd_per_hour: float = Field(
        gt=0, le=1_000_000, description="Paid every hour until termEnd, used or not."
    )
    covered_price_per_hour: float = Field(
        gt=0,
        le=10_000,
        description="A node-hour's price under the commitment (the plan's rate); nodes beyond "
        "what usdPerHour covers pay pricePerHour.",
    )
    term_end: str | None = Field(
        None,
        description="RFC 3339 end of the term; after it the commitment no longer applies.",
        json_schema_extra={"format": "date-time"},
    )


class GPUNodePoolSpec(Wire):
    instance_type: str = Field(
        min_length=1,
        max_length=63,
        description="Cloud instance type, e.g. p4d.24xlarge (label "
        "node.kubernetes.io/instance-type).",
    )
    capacity_type: CapacityType = Field(
        description="spot, on-demand or reserved (label karpenter.sh/capacity-type). Reserved "
        "nodes take on-demand work, are used before anything is bought and are never removed for "
        "idleness: they are paid for anyway."
    )
    reserved_nodes: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="reserved only: nodes paid for whether used or not (RIs, ODCRs, capacity "
        "blocks); the pool never has more.",
    )
    commitment: CommitmentSpec | None = Field(
        None,
        description="on-demand only: a $/hour commitment whose rate covers this pool's nodes "
        "first; status shows the effective price and how much of it is used.",
    )
    price_per_hour: float | None = Field(
        None,
        ge=0,
        le=10_000,
        description="USD per node-hour at this capacity type. Unset: the operator's price "
        "sources (published price lists, spot price history or a ConfigMap) give it for region, "
        "instanceType and capacityType, and status.pricePerHour shows it.",
    )
    region: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        description="Cloud region whose price applies; default the operator's region setting.",
    )
    interruptions_per_month: float | None = Field(
        None,
        ge=0,
        le=100,
        description="spot only: how often a node is taken back, as the share of nodes "
        "interrupted per month (AWS Spot Advisor's measure; 0.25 = 25 %). Unset: the price "
        "source's figure where it has one (AWS does, GCP does not).",
    )
    interruption_loss_seconds: int = Field(
        600,
        ge=0,
        le=604_800,
        description="spot only: paid work one interruption throws away (a replica's cold start, "
        "a job's work since its last checkpoint). Pools are ranked by expected price: price × "
        "(1 + interruptions per hour × this).",
    )
    gpu: NodeGPU
    cpu: Quantity = Field(description='Allocatable CPU per node, e.g. "96".')
    memory: Quantity = Field(description='Allocatable memory per node, e.g. "1152Gi".')
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels every node of the pool carries."
    )
    taints: list[Taint] = Field(
        default_factory=list,
        description="Taints every node carries; the operator's pods tolerate them.",
    )
    min_nodes: int = Field(0, ge=0, le=10_000, description="Never scale below this many nodes.")
    max_nodes: int = Field(10, ge=0, le=10_000, description="Never scale above this many nodes.")
    idle_timeout: Duration = Field(
        "10m",
        description="How long a node may sit idle (no pod using its GPUs) before it is removed.",
    )
    idle_utilization_pct: float | None = Field(
        None,
        alias="idleUtilizationPercent",
        ge=0,
        le=100,
        description="Also idle: a busy node whose GPUs stayed under this utilization (%) for "
        "idleTimeout, "
        "per Prometheus (the operator's --prometheus-url). Unset: idle means nothing placed.",
    )
    disruption_budget: int = Field(
        1,
        ge=0,
        le=1000,
        description="At most this many of the pool's nodes are drained for removal at a time; 0 "
        "never removes idle nodes.",
    )
    consolidation_policy: ConsolidationPolicy = Field(
        ConsolidationPolicy.WHEN_EMPTY_OR_UNDERUTILIZED,
        description="WhenEmptyOrUnderutilized also removes a busy node once its pods fit on other "
        "nodes; WhenEmpty only idle ones.",
    )
    consolidate_after: Duration = Field(
        "5m",
        description="How long a busy node's pods must have fit elsewhere before it is "
        "consolidated.",
    )
    sharing: SharingMode = Field(
        SharingMode.MEMORY_SLICE,
        description="memory-slice packs several workloads per GPU; whole gives each workload "
        "whole GPUs.",
    )
    isolation: IsolationMode = Field(
        IsolationMode.NVML_LIMIT, description="How the node agent enforces a memory slice."
    )
    # default {} lets the API server fill in the provider's own defaults.
    provider: Provider = Field(default_factory=Provider, json_schema_extra={"default": {}})

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minNodes <= self.maxNodes",
                    "message": "minNodes must not exceed maxNodes",
                },
                {
                    "rule": "(self.capacityType == 'reserved') == has(self.reservedNodes)",
                    "message": "reservedNodes is set exactly when capacityType is reserved",
                },
                {
                    "rule": "!has(self.commitment) || self.capacityType == 'on-demand'",
                    "message": "a commitment covers on-demand nodes only",
                },
            ]
        }
    )

    def priced(self, status_price: float | None) -> "GPUNodePoolSpec | None":
        """The spec with the price in use: its own pricePerHour, else what the operator found in
        the price sources (the pool's status.pricePerHour); None while it has neither."""
        if self.price_per_hour is not None:
            return self
        if status_price is None:
            return None
        return self.model_copy(update={"price_per_hour": float(status_price)})

    def node_labels(self, pool: str) -> dict[str, str]:
        """Labels every node of the pool carries, whichever provider makes it (the nvidia.com
        ones are what GPU feature discovery would set on a real node)."""
        return {
            **self.labels,
            names.LABEL_NODEPOOL: pool,
            names.LABEL_CAPACITY_TYPE: self.capacity_type,
            names.LABEL_INSTANCE_TYPE: self.instance_type,
            names.LABEL_GPU_PRODUCT: self.gpu.model,
            names.LABEL_GPU_MEMORY: str(self.gpu.memory_mib),
            names.LABEL_GPU_COUNT: str(self.gpu.count),
        }

    @model_validator(mode="after")
    def _bounds(self) -> "GPUNodePoolSpec":
        if self.min_nodes > self.max_nodes:
            raise ValueError("minNodes must not exceed maxNodes")
        if (self.capacity_type == CapacityType.RESERVED) != (self.reserved_nodes is not None):
            raise ValueError("reservedNodes is set exactly when capacityType is reserved")
        if self.commitment is not None and self.capacity_type != CapacityType.ON_DEMAND:
            raise ValueError("a commitment covers on-demand nodes only")
        return self


class GPUNodePoolStatus(Costed):
    price_per_hour: float | None = Field(
        None, ge=0, description="USD per node-hour in use: spec.pricePerHour or the price source."
    )
    expected_price_per_hour: float | None = Field(
        None, ge=0, description="The price with spot interruptions counted: what pools rank by."
    )
    price_source: str | None = Field(
        None, description="spec, or the price source's file or ConfigMap and line."
    )
    price_as_of: str | None = Field(None, description="When the source says the price is from.")
    interruptions_per_month: float | None = Field(None, ge=0)
    effective_price_per_hour: float | None = Field(
        None,
        ge=0,
        description="What a running node really costs: costPerHour over nodes, reserved or "
        "committed capacity paid anyway included.",
    )
    commitment_utilization: float | None = Field(
        None, ge=0, le=1, description="Share of the reservation or commitment in use (0-1)."
    )
    nodes: int = Field(0, ge=0, description="Nodes that belong to the pool.")
    ready_nodes: int = Field(0, ge=0, description="Of those, Ready and schedulable.")
    in_flight_nodes: int = Field(
        0,
        ge=0,
        description="Created and not Ready yet (booting): counted as capacity, never provisioned "
        "twice.",
    )
    idle_nodes: list[str] = Field(
        default_factory=list, description="Nodes with no pod using a GPU."
    )
    draining_nodes: list[str] = Field(
        default_factory=list, description="Nodes cordoned and being drained for removal."
    )
    gpu_memory_allocated_mib: int = Field(0, alias="gpuMemoryAllocatedMiB", ge=0)
    gpu_memory_total_mib: int = Field(0, alias="gpuMemoryTotalMiB", ge=0)
    idle_cost_per_hour: float = Field(
        0.0, ge=0, description="USD per hour of GPU memory no workload holds."
    )
    idle_cost_accumulated: float = Field(
        0.0, ge=0, description="USD of idle capacity, accounted with costAccumulated."
    )
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)


class GPUNodePool(Wire):
    """Cluster-scoped. Status is written by the operator only."""

    spec: GPUNodePoolSpec
    status: GPUNodePoolStatus | None = None
