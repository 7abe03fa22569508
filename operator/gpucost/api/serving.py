"""The serving parts of an InferencePool: engine, probes, rollout strategy, pod template, the
Service and the Gateway API Inference Extension object kept beside it."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema

from gpucost.api.common import Wire

Opaque = Annotated[
    dict[str, Any],
    Field(json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through as written (a volume, a security context): the API server
validates it against the core schema when the operator creates the pod."""


def _count_or_percent(value: int | str) -> int | str:
    """Mirrors the CEL rule below."""
    if (
        isinstance(value, int)
        and value < 0
        or isinstance(value, str)
        and not re.fullmatch(r"[0-9]{1,3}%", value)
    ):
        raise ValueError("a count (0 or more) or a percentage like 25%")
    return value


IntOrPercent = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    AfterValidator(_count_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? self >= 0 : self.matches('^[0-9]{1,3}%$')",
                    "message": "a count (0 or more) or a percentage like 25%",
                }
            ],
        }
    ),
]


class Engine(str, enum.Enum):
    """The serving engine: decides the flags that carry the GPU slice, the port and the probes."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"
    CUSTOM = "custom"


class HTTPGet(Wire):
    """An HTTP GET on the replica's pod IP; a status below 400 passes."""

    path: str = Field("/health", max_length=2048, description="URL path to GET.")
    port: int | None = Field(None, ge=1, le=65535, description="Default: the pool's port.")


class TCPSocket(Wire):
    """A TCP connect to the replica's port."""

    port: int | None = Field(None, ge=1, le=65535, description="Default: the pool's port.")


class Probe(Wire):
    """A container probe (core/v1 Probe's handlers and timing); unset fields keep the engine's
    default."""

    http_get: HTTPGet | None = None
    tcp_socket: TCPSocket | None = None
    exec: Opaque | None = Field(None, description="core/v1 ExecAction: {command: [...]}.")
    initial_delay_seconds: int | None = Field(None, ge=0, description="Before the first probe.")
    period_seconds: int | None = Field(None, ge=1, description="Between probes.")
    timeout_seconds: int | None = Field(None, ge=1, description="For one probe to answer.")
    failure_threshold: int | None = Field(
        None, ge=1, description="Failures in a row that fail the probe."
    )
    success_threshold: int | None = Field(
        None, ge=1, description="Successes in a row that pass it again (readiness only)."
    )


class Probes(Wire):
    """Overrides of the engine's default probes, field by field."""

    readiness: Probe | None = Field(None, description="Ready = in the Service's endpoints.")
    liveness: Probe | None = Field(None, description="Restarts a hung server.")
    startup: Probe | None = Field(
        None,
        description="Holds readiness and liveness back while the model loads (engine default: "
        "30 minutes, enough for a 70B model over slow storage).",
    )


class RollingUpdate(Wire):
    """How fast a new revision replaces the old one."""

    max_surge: IntOrPercent = Field(
        1, description="Replicas over `replicas` while rolling (a count or a % of replicas)."
    )
    max_unavailable: IntOrPercent = Field(
        0,
        description="Ready replicas the rollout may take away below `replicas`. 0 by default: "
        "an old replica goes only once its replacement is Ready, so capacity never dips.",
    )


class Strategy(Wire):
    """How replicas move to a new revision (a rolling update, Deployment-style)."""

    rolling_update: RollingUpdate = Field(
        default_factory=RollingUpdate, json_schema_extra={"default": {}}
    )


class TemplateMetadata(Wire):
    """Labels and annotations added to every replica pod."""

    labels: dict[str, str] = Field(default_factory=dict, description="Added pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Added pod annotations.")


class TemplateSpec(Wire):
    """The parts of a PodSpec a platform team sets on serving pods. The operator's own fields (GPU
    pinning, node affinity, its labels and GPU env) always win; a template that would change
    them is refused with the field's path."""

    service_account_name: str | None = Field(
        None, max_length=253, description="The pods' ServiceAccount (its token is mounted)."
    )
    image_pull_secrets: list[Opaque] = Field(
        default_factory=list, description="core/v1 LocalObjectReferences: {name: ...}."
    )
    volumes: list[Opaque] = Field(
        default_factory=list, description="core/v1 Volumes (a model cache PVC, a Secret)."
    )
    volume_mounts: list[Opaque] = Field(
        default_factory=list, description="Mounts of the serving container."
    )
    env_from: list[Opaque] = Field(
        default_factory=list, description="Of the serving container (secretRef, configMapRef)."
    )
    security_context: Opaque | None = Field(None, description="The pod's securityContext.")
    container_security_context: Opaque | None = Field(
        None, description="The serving container's securityContext."
    )
    tolerations: list[Opaque] = Field(
        default_factory=list, description="Besides the ones for the GPUNodePool's taints."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels replicas need; narrows the GPUNodePools they may use.",
    )
    priority_class_name: str | None = Field(None, max_length=253, description="PriorityClass.")
    termination_grace_period_seconds: int | None = Field(
        None, ge=0, description="Time to finish in-flight requests after SIGTERM (default 30)."
    )
    sidecars: list[Opaque] = Field(
        default_factory=list, description="More containers in each replica pod."
    )
    init_containers: list[Opaque] = Field(
        default_factory=list, description="core/v1 Containers run before the server."
    )


class Template(Wire):
    """A strategic subset of a PodTemplateSpec for the replica pods."""

    metadata: TemplateMetadata = Field(
        default_factory=TemplateMetadata, json_schema_extra={"default": {}}
    )
    spec: TemplateSpec = Field(default_factory=TemplateSpec, json_schema_extra={"default": {}})


class ServiceType(str, enum.Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class ServiceOptions(Wire):
    """The pool's Service (named after it, selecting its Ready replicas)."""

    enabled: bool = Field(True, description="Keep a Service named after the pool.")
    type: ServiceType = Field(ServiceType.CLUSTER_IP, description="The Service's type.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="On the Service (a load balancer's settings)."
    )


class PortRef(Wire):
    """A port by number."""

    number: int = Field(ge=1, le=65535, description="Port number.")


class EndpointPickerRef(Wire):
    """The inference gateway's endpoint picker (its InferencePool.spec.endpointPickerRef)."""

    name: str = Field(min_length=1, max_length=253, description="The picker's name.")
    kind: str = Field("Service", max_length=63, description="Its kind (a Service by default).")
    port: PortRef | None = Field(None, description="Its port (required for a Service).")
    failure_mode: str | None = Field(
        None, pattern="^(FailOpen|FailClose)$", description="When the picker does not answer."
    )


class InferenceExtension(Wire):
    """The Gateway API Inference Extension InferencePool kept beside this one."""

    enabled: bool = Field(
        True,
        description="Keep an inference.networking.k8s.io InferencePool of the same name "
        "selecting the same pods, when that CRD is installed.",
    )
    endpoint_picker_ref: EndpointPickerRef | None = None


class DisruptionBudget(Wire):
    max_unavailable: IntOrPercent = Field(
        1, description="Replicas a voluntary disruption (a drain) may take down at once."
    )

    model_config = ConfigDict(json_schema_extra={"description": "A PodDisruptionBudget."})
