"""Which replica pods to create and delete: scaling and rolling updates in one decision.

A replica pod carries the revision (a hash of everything that shapes it) it was built from. A
new revision replaces replicas Deployment-style within ``maxSurge``/``maxUnavailable``; with the
GPU-aware defaults (surge 1, unavailable 0) an old replica is deleted only once a new one is
Ready, so serving capacity never dips. Pods are named by ordinal: a retried reconcile creates
the same names, so a lost response can never double a replica.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.serving import IntOrPercent
from gpucost.core.snapshot import PlacedPod

SHAPING = (
    "image",
    "engine",
    "command",
    "args",
    "env",
    "port",
    "model_uri",
    "model_memory_mib",
    "served_model_name",
    "gpu",
    "resources",
    "probes",
    "template",
)
"""The spec fields a replica pod is built from; replicas, bounds and pool choice are not."""


def revision(spec: InferencePoolSpec) -> str:
    shaping = spec.model_dump(include=set(SHAPING), by_alias=True, mode="json")
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def resolve(value: IntOrPercent, replicas: int, round_up: bool) -> int:
    """A count, or a percentage of ``replicas`` (surge rounds up, unavailable down, as
    Deployment's)."""
    if isinstance(value, int):
        return value
    share = replicas * int(value.rstrip("%")) / 100
    return math.ceil(share) if round_up else math.floor(share)


@dataclass(frozen=True)
class RolloutPlan:
    create: tuple[int, ...]
    """Ordinals for new pods of the update revision, lowest free first."""
    delete: tuple[str, ...]
    updated: int
    """Live pods of the update revision after the plan."""
    updated_ready: int
    old: int
    """Live pods of other revisions after the plan (0: the rollout is complete)."""


def _victims(pods: list[PlacedPod], count: int, keep: frozenset[str]) -> list[PlacedPod]:
    """Not-Ready first, then those outside ``keep``, then the highest ordinal (the newest)."""
    return sorted(pods, key=lambda p: (p.ready, p.name in keep, -p.replica))[: max(count, 0)]


def plan(
    desired: int,
    pods: list[PlacedPod],
    update: str,
    surge: int,
    unavailable: int,
    stalled: bool = False,
    keep: frozenset[str] = frozenset(),
) -> RolloutPlan:
    """``stalled``: the progress deadline passed; the update revision's unready pods go (they hold
    GPUs and serve nothing) and no new one is made, while the old ones keep serving. ``keep``:
    pods a scale-down takes last (the on-demand base)."""
    live = [p for p in pods if not p.terminal and not p.deleting]
    new = [p for p in live if p.revision == update]
    old = [p for p in live if p.revision != update]
    delete = [p for p in pods if p.terminal and not p.deleting]
    if stalled and old:
        gone = [p for p in new if not p.ready]
        delete += gone
        kept = len(new) - len(gone)
        return _done(delete, [], kept, kept, len(old))
    # Old pods that are not Ready serve nothing: they can always go.
    delete += [p for p in old if not p.ready]
    old = [p for p in old if p.ready]
    extra = _victims(new, len(new) - desired, keep)
    delete += extra
    new = [p for p in new if p not in extra]
    ready_new = sum(p.ready for p in new)
    removable = len(old) + ready_new - (desired - unavailable) if old else 0
    drop = _victims(old, min(len(old), removable), keep)
    delete += drop
    old = [p for p in old if p not in drop]
    ceiling = desired + surge if old else desired
    count = max(0, min(desired - len(new), ceiling - len(old) - len(new)))
    used = {p.replica for p in pods}
    ordinals: list[int] = []
    i = 0
    while len(ordinals) < count:
        if i not in used:
            ordinals.append(i)
        i += 1
    return _done(delete, ordinals, len(new) + count, ready_new, len(old))


def _done(
    delete: list[PlacedPod], create: list[int], updated: int, ready: int, old: int
) -> RolloutPlan:
    return RolloutPlan(tuple(create), tuple(sorted(p.name for p in delete)), updated, ready, old)
