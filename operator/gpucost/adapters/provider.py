"""Node providers: what creates and deletes a GPUNodePool's nodes (``spec.provider.kind``).

Every provider takes the same three calls so the autoscaler never knows which one it drives. A
provider that fails to launch raises ProviderError; the autoscaler reads that as the capacity
being unavailable (spot exhausted, quota) and leaves the pool out for a cool-down. A provider whose
launches fail later (Karpenter) also reports those failures, for the same cool-down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from kubernetes.client.exceptions import ApiException

from gpucost.adapters.clusterapi import ClusterAPIProvider
from gpucost.adapters.karpenter import FailedLaunch, KarpenterError, KarpenterProvider
from gpucost.adapters.kube import Kube
from gpucost.adapters.kwok import KwokProvider
from gpucost.api.nodepool import GPUNodePoolSpec, ProviderKind


class ProviderError(RuntimeError):
    pass


class NodeProvider(Protocol):
    name: str

    def launch(
        self, pool: str, spec: GPUNodePoolSpec, annotations: list[dict[str, str]]
    ) -> list[str]:
        """One new node per entry of ``annotations``, which go on that Node where the provider
        names it (the autoscaler's reservation and the plan's GPU slots for it)."""
        ...

    def terminate(self, node: str, pool: str, spec: GPUNodePoolSpec) -> bool:
        """Called again on every tick until the node is gone: must be idempotent. True when this
        call started the removal, False when it was under way already."""
        ...

    def unregistered(
        self, pool: str, spec: GPUNodePoolSpec, node_labels: dict[str, dict[str, str]]
    ) -> int:
        """Nodes launched that have no Node object yet: capacity in flight the cluster can't
        show."""
        ...


class Providers:
    """One provider per kind, with API failures turned into ProviderError."""

    def __init__(self, kube: Kube) -> None:
        self._karpenter = KarpenterProvider(kube)
        self._by_kind: dict[str, NodeProvider] = {
            ProviderKind.KWOK.value: KwokProvider(kube),
            ProviderKind.CLUSTER_API.value: ClusterAPIProvider(kube),
            ProviderKind.KARPENTER.value: self._karpenter,
        }

    def supports(self, spec: GPUNodePoolSpec) -> bool:
        return spec.provider.kind in self._by_kind

    @staticmethod
    @contextmanager
    def _as_provider_error(spec: GPUNodePoolSpec) -> Iterator[None]:
        """An API failure (or a Karpenter NodePool that can't be used) as the ProviderError the
        autoscaler reads as capacity being unavailable."""
        try:
            yield
        except ApiException as e:
            raise ProviderError(f"{spec.provider.kind}: {e.status} {e.reason}") from e
        except KarpenterError as e:
            raise ProviderError(f"{spec.provider.kind}: {e}") from e

    def launch(
        self, pool: str, spec: GPUNodePoolSpec, annotations: list[dict[str, str]]
    ) -> list[str]:
        with self._as_provider_error(spec):
            return self._by_kind[spec.provider.kind].launch(pool, spec, annotations)

    def terminate(self, node: str, pool: str, spec: GPUNodePoolSpec) -> bool:
        with self._as_provider_error(spec):
            return self._by_kind[spec.provider.kind].terminate(node, pool, spec)

    def unregistered(
        self, pool: str, spec: GPUNodePoolSpec, node_labels: dict[str, dict[str, str]]
    ) -> int:
        with self._as_provider_error(spec):
            return self._by_kind[spec.provider.kind].unregistered(pool, spec, node_labels)

    def failed_launches(self, pool: str, spec: GPUNodePoolSpec) -> list[FailedLaunch]:
        """Launches that failed after ``launch`` returned (only Karpenter's fail that way)."""
        if spec.provider.kind != ProviderKind.KARPENTER:
            return []
        with self._as_provider_error(spec):
            return self._karpenter.failed_launches(pool, spec)

    def forget(self, pool: str, spec: GPUNodePoolSpec, failed: list[FailedLaunch]) -> None:
        """The failures are acted on (the cool-down is written): the provider lets them go."""
        if failed:
            self._karpenter.forget(pool, failed)
