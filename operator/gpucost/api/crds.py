"""Render CustomResourceDefinitions from the pydantic models.

The API server only accepts *structural* OpenAPI v3 schemas: no ``$ref``, a type on every node,
OpenAPI 3.0 numeric bounds. Pydantic emits JSON Schema 2020-12, so this module inlines references,
collapses ``Optional`` unions and rewrites bounds; everything else (descriptions, enums, patterns,
CEL rules) passes through unchanged so the model stays the one place an API change is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gpucost.api import GROUP, VERSION
from gpucost.api.budget import ClusterCostBudget, CostBudget
from gpucost.api.compressionjob import CompressionJob
from gpucost.api.inferencepool import InferencePool
from gpucost.api.nodepool import GPUNodePool

_DROP = {"title", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    while "$ref" in node or "anyOf" in node:
        if "$ref" in node:
            target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
            node = {**target, **node}  # the field's own description wins over the class docstring
            continue
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"unions other than Optional[X] have no structural schema: {variants}")
        node = {**variants[0], **node}
        if node.get("default", ...) is None:
            del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "additionalProperties" and isinstance(value, bool)):
            # structural schemas forbid it beside properties (the API server prunes instead), and
            # an open object says so with x-kubernetes-preserve-unknown-fields
            continue
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in {"items", "additionalProperties"} and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema for ``model`` (by wire names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


@dataclass(frozen=True)
class Kind:
    model: type[BaseModel]
    kind: str
    plural: str
    short_names: list[str]
    scope: str
    description: str
    columns: list[dict[str, str]] = field(default_factory=list)
    scale: dict[str, str] | None = None
    """The scale subresource's paths (kubectl scale, HPA, KEDA), if the kind has one."""


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_BUDGET_COLUMNS = [
    {"name": "Daily", "type": "number", "jsonPath": ".spec.daily"},
    {"name": "Daily-%", "type": "number", "jsonPath": ".status.daily.percent"},
    {"name": "Monthly", "type": "number", "jsonPath": ".spec.monthly"},
    {"name": "Monthly-%", "type": "number", "jsonPath": ".status.monthly.percent"},
    {"name": "$/h", "type": "number", "jsonPath": ".status.costPerHour"},
    {
        "name": "Exceeded",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Exceeded")].status',
    },
]
_READY = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
}

KINDS: list[Kind] = [
    Kind(
        GPUNodePool,
        "GPUNodePool",
        "gpunodepools",
        ["gnp", "gpupool"],
        "Cluster",
        "A kind of GPU node the operator can add: instance type, spot or on-demand price, GPUs, "
        "and how they are shared.",
        [
            {"name": "Instance", "type": "string", "jsonPath": ".spec.instanceType"},
            {"name": "Capacity", "type": "string", "jsonPath": ".spec.capacityType"},
            {"name": "GPU", "type": "string", "jsonPath": ".spec.gpu.model"},
            {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodes"},
            {
                "name": "Ready-Nodes",
                "type": "integer",
                "jsonPath": ".status.readyNodes",
                "priority": 1,
            },
            {
                "name": "In-Flight",
                "type": "integer",
                "jsonPath": ".status.inFlightNodes",
                "priority": 1,
            },
            {
                "name": "$/Node-h",
                "type": "number",
                "jsonPath": ".status.pricePerHour",
                "priority": 1,
            },
            {"name": "$/h", "type": "number", "jsonPath": ".status.costPerHour"},
            _READY,
            _AGE,
        ],
    ),
    Kind(
        InferencePool,
        "InferencePool",
        "inferencepools",
        # Not "infpool": the Gateway API Inference Extension's InferencePool claims it.
        ["ipool"],
        "Namespaced",
        "Model-serving replicas, each packed onto a slice of one GPU's memory or onto whole GPUs, "
        "behind a Service, rolled out replica by replica.",
        [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Placed", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Ready-Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Updated", "type": "integer", "jsonPath": ".status.updatedReplicas"},
            {"name": "Engine", "type": "string", "jsonPath": ".spec.engine", "priority": 1},
            {"name": "GPU-MiB", "type": "integer", "jsonPath": ".spec.gpu.memoryMiB"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".spec.gpu.gpus", "priority": 1},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
            {
                "name": "$/1M-Tokens",
                "type": "number",
                "jsonPath": ".status.tokens.usdPerMillionTokens",
                "priority": 1,
            },
            {
                "name": "Revision",
                "type": "string",
                "jsonPath": ".status.updateRevision",
                "priority": 1,
            },
            _READY,
            _AGE,
        ],
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    ),
    Kind(
        CompressionJob,
        "CompressionJob",
        "compressionjobs",
        ["cjob", "compjob"],
        "Namespaced",
        "Quantize, prune or distill a model on GPU nodes, spot-first when interruptible.",
        [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Interruptible", "type": "boolean", "jsonPath": ".spec.interruptible"},
            {"name": "Weights", "type": "number", "jsonPath": ".status.results.weightRatio"},
            {
                "name": "PPL+%",
                "type": "number",
                "jsonPath": ".status.results.perplexityIncreasePercent",
            },
            {
                "name": "Acc+pts",
                "type": "number",
                "jsonPath": ".status.results.accuracyChangePoints",
                "priority": 1,
            },
            {
                "name": "Slice",
                "type": "integer",
                "jsonPath": ".status.results.recommendedMemoryMiB",
            },
            {"name": "$/h", "type": "number", "jsonPath": ".status.costPerHour"},
            _AGE,
        ],
    ),
    Kind(
        CostBudget,
        "CostBudget",
        "costbudgets",
        ["cbudget"],
        "Namespaced",
        "A daily and/or monthly GPU spending limit for this namespace: alerts at thresholds, "
        "enforcement at 100 %.",
        [*_BUDGET_COLUMNS, _AGE],
    ),
    Kind(
        ClusterCostBudget,
        "ClusterCostBudget",
        "clustercostbudgets",
        ["ccbudget"],
        "Cluster",
        "A daily and/or monthly GPU spending limit for the namespaces a selector picks.",
        [*_BUDGET_COLUMNS, _AGE],
    ),
]


def crd(kind: Kind) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition for one kind."""
    schema = openapi_schema(kind.model)
    props = schema["properties"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": kind.short_names,
                "categories": ["gpucost"],
            },
            "scope": kind.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        **({"scale": kind.scale} if kind.scale else {}),
                    },
                    "additionalPrinterColumns": kind.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": props["spec"],
                                "status": props["status"],
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(k) for k in KINDS]
