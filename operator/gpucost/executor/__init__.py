"""The autoscaler's executor: applies ``core.autoscale`` commands through the adapters.

Every command is safe to apply again (patches set a value, an eviction or a termination of what is
gone is a no-op), so a look after a crash may repeat the last one's commands harmlessly. Each
decision is both a log line and an Event on its pool, with its reason and $/hour change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

import kopf

from gpucost import names
from gpucost.adapters import metrics
from gpucost.adapters.karpenter import FailedLaunch
from gpucost.adapters.kube import Kube
from gpucost.adapters.provider import ProviderError, Providers
from gpucost.api.common import rfc3339
from gpucost.core.autoscale import (
    Command,
    Cooldown,
    Disrupt,
    Evict,
    Keep,
    Launch,
    MarkConsolidatable,
    MarkIdle,
    MarkReplacing,
    Terminate,
)
from gpucost.state.cluster import Pool

log = logging.getLogger(__name__)


def _post(pool: Pool, type_: str, reason: str, message: str) -> None:
    (log.warning if type_ == "Warning" else log.info)("[%s] %s: %s", pool.name, reason, message)
    metrics.decisions.labels(pool.name, reason).inc()
    kopf.event(pool.ref, type=type_, reason=reason, message=message)


def reservation(launch: Launch, index: int) -> dict[str, str]:
    """The annotation a new node carries: who it is held for, until when, on which GPUs."""
    node = launch.nodes[index]
    slots = [[s.owner, list(s.gpu_indices)] for s in node.slots]
    owners = sorted({s.owner for s in node.slots})
    until = round(launch.reserved_until, 3)
    body = {"owners": owners, "until": until, "hold": launch.hold, "slots": slots}
    return {names.ANNOTATION_RESERVED_FOR: json.dumps(body, separators=(",", ":"))}


class Executor:
    def __init__(self, kube: Kube, providers: Providers | None = None) -> None:
        self.kube = kube
        self.providers = providers or Providers(kube)
        self._blocked: set[tuple[str, str]] = set()
        """Evictions a PodDisruptionBudget refused, so the refusal is told once, not every look."""
        self._kept: dict[str, str] = {}

    def apply(self, commands: Sequence[Command], pools: Mapping[str, Pool]) -> None:
        blocked: set[tuple[str, str]] = set()
        kept: dict[str, str] = {}
        for command in commands:
            if isinstance(command, Evict):
                if not self._evict(command, pools):
                    blocked.add((command.namespace, command.name))
            elif isinstance(command, Keep):
                kept[command.node] = command.why
                if self._kept.get(command.node) != command.why:
                    log.info(
                        "node %s is idle past its idleTimeout but stays: %s",
                        command.node,
                        command.why,
                    )
            else:
                self._apply(command, pools)
        self._blocked, self._kept = blocked, kept

    def _apply(self, command: Command, pools: Mapping[str, Pool]) -> None:
        if isinstance(command, MarkIdle):
            self._annotate(command.node, names.ANNOTATION_IDLE_SINCE, command.since)
        elif isinstance(command, MarkConsolidatable):
            self._annotate(command.node, names.ANNOTATION_CONSOLIDATABLE_SINCE, command.since)
        elif isinstance(command, MarkReplacing):
            value = (
                json.dumps({"since": round(command.since, 3), "message": command.message})
                if command.since is not None
                else None
            )
            self.kube.patch_node(
                command.node, {"metadata": {"annotations": {names.ANNOTATION_REPLACING: value}}}
            )
        elif isinstance(command, Cooldown):
            self.kube.annotate_node_pool(
                command.pool, {names.ANNOTATION_LAUNCH_COOLDOWN: rfc3339(command.until)}
            )
        elif isinstance(command, Disrupt):
            self._disrupt(command, pools[command.disruption.pool])
        elif isinstance(command, Terminate):
            self._terminate(command, pools[command.pool])
        elif isinstance(command, Launch):
            self._launch(command, pools)

    def launch_failed(self, pool: Pool, failed: list[FailedLaunch], until: float) -> None:
        """A launch that failed after it was asked for: the pool is left out until ``until``
        (written first, so a restart before the provider lets the failure go repeats this)."""
        self._apply(Cooldown(pool.name, until), {pool.name: pool})
        pool.annotations[names.ANNOTATION_LAUNCH_COOLDOWN] = rfc3339(until)
        spec = pool.spec
        for f in failed:
            _post(
                pool,
                "Warning",
                "LaunchFailed",
                f"could not launch {spec.instance_type} ({spec.capacity_type}): {f.message}; "
                f"pool left out until {rfc3339(until)}",
            )
        self.providers.forget(pool.name, spec, failed)

    def _annotate(self, node: str, key: str, since: float | None) -> None:
        value = rfc3339(since) if since is not None else None
        self.kube.patch_node(node, {"metadata": {"annotations": {key: value}}})

    def _disrupt(self, command: Disrupt, pool: Pool) -> None:
        d = command.disruption
        self.kube.patch_node(
            d.node,
            {
                "metadata": {
                    "annotations": {
                        names.ANNOTATION_DISRUPTION: d.reason,
                        names.ANNOTATION_REPLACING: None,
                    }
                },
                "spec": {"unschedulable": True},
            },
        )
        _post(
            pool,
            "Warning" if command.warning else "Normal",
            d.reason,
            f"draining node {d.node} for removal: {d.message}; "
            f"-${command.price:.2f}/h once removed",
        )

    def _evict(self, command: Evict, pools: Mapping[str, Pool]) -> bool:
        if self.kube.evict(command.namespace, command.name):
            return True
        if (command.namespace, command.name) not in self._blocked and command.pool in pools:
            _post(
                pools[command.pool],
                "Normal",
                "EvictionBlocked",
                f"a PodDisruptionBudget holds {command.namespace}/{command.name} on node "
                f"{command.node}; "
                "retrying every look",
            )
        return False

    def _terminate(self, command: Terminate, pool: Pool) -> None:
        try:
            started = self.providers.terminate(command.node, pool.name, pool.spec)
        except ProviderError as e:
            _post(pool, "Warning", "TerminateFailed", f"node {command.node}: {e}")
            return
        if not started:
            return  # asked on an earlier look; the provider is still removing it
        _post(
            pool,
            "Normal",
            "NodeRemoved",
            f"removed node {command.node} ({command.reason}): -${command.price:.2f}/h",
        )

    def _launch(self, command: Launch, pools: Mapping[str, Pool]) -> None:
        pool = pools[command.pool]
        spec = pool.spec
        try:
            made = self.providers.launch(
                pool.name, spec, [reservation(command, i) for i in range(command.count)]
            )
        except ProviderError as e:
            for undo in command.on_failure:
                self._apply(undo, pools)
            cooldown = next((c for c in command.on_failure if isinstance(c, Cooldown)), None)
            left_out = f"; pool left out until {rfc3339(cooldown.until)}" if cooldown else ""
            _post(
                pool,
                "Warning",
                "LaunchFailed",
                f"could not launch {command.count} {spec.instance_type} ({spec.capacity_type}): "
                f"{e}{left_out}",
            )
            return
        holds = ", ".join(f"{owner} x{n}" for owner, n in command.owners().items())
        _post(
            pool,
            "Normal",
            "ScaleUp",
            f"launched {command.count} {spec.instance_type} {spec.capacity_type} node(s) "
            f"({', '.join(made)}) for {holds}: +${command.count * command.price:.2f}/h",
        )
