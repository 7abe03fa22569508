"""Shapes shared by every custom resource: camelCase wire format, conditions, GPU asks."""

from __future__ import annotations

import enum
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# Kubernetes resource.Quantity, e.g. "500m", "4", "16Gi".
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# Go-style duration as used across Kubernetes APIs, e.g. "90s", "10m", "1h30m".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """A Go duration ("1h30m", "90s", "500ms") in seconds; the schema has checked the form."""
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m or 1h30m")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=32)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class Wire(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields rejected.

    Unknown fields are rejected here as the CRD's structural schema prunes them in the API server;
    rejecting loudly in Python catches typos in examples and tests instead of silently dropping.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True
    )

    def wire(self) -> dict[str, Any]:
        """The object as it appears in the Kubernetes API (camelCase, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class CapacityType(str, enum.Enum):
    """Names follow Karpenter's ``karpenter.sh/capacity-type`` label values."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"
    RESERVED = "reserved"
    """Paid for whether used or not (RIs, ODCRs, capacity blocks): takes on-demand work."""


class ConditionStatus(str, enum.Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Wire):
    """metav1.Condition, as the Kubernetes API conventions define it."""

    type: str = Field(description="Condition type in CamelCase, e.g. Ready.", max_length=316)
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="One CamelCase word a program can switch on.",
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
    )
    message: str = Field("", description="Human-readable detail.", max_length=32768)
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was computed for."
    )
    last_transition_time: datetime = Field(
        description="When status last changed (not when the condition was last computed)."
    )


class GPUAsk(Wire):
    """What one replica (or job) needs: a memory slice of one GPU, or whole GPUs."""

    memory_mib: int | None = Field(
        None,
        alias="memoryMiB",
        ge=1,
        le=1_048_576,
        description="A slice of one GPU's memory in MiB; several slices share one GPU.",
    )
    gpus: int | None = Field(
        None, ge=1, le=64, description="Whole GPUs on one node, none shared with other work."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.memoryMiB) != has(self.gpus)",
                    "message": "set exactly one of gpu.memoryMiB (a slice) or gpu.gpus "
                    "(whole GPUs)",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "GPUAsk":
        # Mirrors the CEL rule, for objects that reach us without it (an older CRD, a dry run).
        if (self.memory_mib is None) == (self.gpus is None):
            raise ValueError("set exactly one of gpu.memoryMiB (a slice) or gpu.gpus (whole GPUs)")
        return self


def condition(status: dict[str, Any] | None, type: str) -> dict[str, Any]:
    """The condition of ``type`` in an object's status (Nodes, Pods and ours share the shape), or
    {}."""
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type), {})


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime | None = None,
) -> list[Condition]:
    """Return conditions with ``type`` set; lastTransitionTime moves only when status changes."""
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    old = next((c for c in conditions if c.type == type), None)
    moved = old is None or old.status != ConditionStatus(status).value
    new = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=now if moved else old.last_transition_time,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type else c for c in conditions]


def rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def epoch(text: str | None) -> float | None:
    """None for a missing or hand-mangled time: the caller starts over rather than fails."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Costed(Wire):
    """Running cost kept in a status, so an operator restart keeps counting from it."""

    cost_per_hour: float = Field(0.0, ge=0, description="USD per hour right now.")
    cost_accumulated: float = Field(
        0.0, ge=0, description="USD since the operator started accounting this object."
    )
    cost_accounted_at: str | None = Field(
        None, description="RFC 3339 time costAccumulated is accounted up to."
    )
