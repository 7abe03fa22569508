"""Builders that merge overrides onto defaults, so each test states only what it is about."""

from __future__ import annotations

from typing import Any

from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.core.inventory import GPU, GPUNode


def gpu_node(
    name: str = "n0",
    *,
    gpus: int = 8,
    mib: int = 81920,
    model: str = "A100-80GB",
    pool: str = "p",
    capacity_type: str = "on-demand",
    shared: bool = True,
    schedulable: bool = True,
) -> GPUNode:
    return GPUNode(
        name=name,
        pool=pool,
        capacity_type=capacity_type,
        price_per_hour=10.0,
        gpus=tuple(GPU(i, model, mib, f"GPU-{name}-{i}") for i in range(gpus)),
        shared=shared,
        schedulable=schedulable,
    )


def pool_spec(**overrides: Any) -> GPUNodePoolSpec:
    base: dict[str, Any] = {
        "instanceType": "p4de.24xlarge",
        "capacityType": "on-demand",
        "pricePerHour": 27.44705,
        "gpu": {"model": "NVIDIA-A100-SXM4-80GB", "memoryMiB": 81920, "count": 8},
        "cpu": "96",
        "memory": "1152Gi",
    }
    return GPUNodePoolSpec.model_validate({**base, **overrides})


def inference_pool_spec(**overrides: Any) -> dict[str, Any]:
    return {"image": "example/server:1", "replicas": 1, "gpu": {"memoryMiB": 20000}, **overrides}


def compression_results(**overrides: Any) -> dict[str, Any]:
    """A CompressionJob's status.results as the worker reports them: a Llama-3.1-8B-sized model
    at W4A16, within a 5 % quality gate."""
    return {
        "scheme": "W4A16",
        "weightBytesBefore": 16_000_000_000,
        "weightBytesAfter": 5_700_000_000,
        "weightRatio": 0.356,
        "perplexityBefore": 8.1,
        "perplexityAfter": 8.3,
        "perplexityIncreasePercent": 2.47,
        "recommendedMemoryMiB": 11776,
        "bf16MemoryMiB": 22272,
        **overrides,
    }
