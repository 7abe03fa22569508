"""How many serving replicas the load asks for: an HPA-style decision with LLM defaults (fast up,
slow down), scale to zero after a quiet spell, and scale from zero at the first held request.

Pure: an observation (the metric, the replicas now, when the last request came, how many wait at
the gateway) and the history the status keeps, in; the replica count, its reason and the new
history, out. The history lives in the pool's status, so a restarted operator keeps its windows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from gpucost.api.autoscaling import Autoscaling, ScalingRules
from gpucost.api.common import duration_seconds

TOLERANCE = 0.1
"""As HPA's: a load within 10 % of the target changes nothing (no flapping on noise)."""


@dataclass(frozen=True)
class Policy:
    """At most ``value`` replicas (``kind`` Pods) or ``value`` % of the replicas (Percent) per
    ``period_s`` seconds."""

    kind: str
    value: int
    period_s: float


@dataclass(frozen=True)
class Rules:
    stabilization_s: float
    policies: tuple[Policy, ...]
    select: str = "Max"
    """Max: the policy that allows the largest change; Min: the smallest; Disabled: none."""


# HPA's scale-up default (double, or 4 pods, every 15 s) and a slower scale-down than HPA's, as
# an LLM replica costs a cold start of minutes to bring back: a 5-minute window, one replica a
# minute.
SCALE_UP = Rules(0.0, (Policy("Percent", 100, 15.0), Policy("Pods", 4, 15.0)))
SCALE_DOWN = Rules(300.0, (Policy("Pods", 1, 60.0),))


@dataclass(frozen=True)
class Observation:
    now: float
    replicas: int
    """Replicas the pool has now (spec.replicas)."""
    load: float | None
    """The metric summed over the replicas (in-flight requests, waiting requests, KV-cache
    fractions), or None when it could not be read (then nothing changes but a wake from zero)."""
    held: int = 0
    """Requests the gateway holds for want of a Ready replica."""
    last_request_at: float | None = None


@dataclass(frozen=True)
class Target:
    per_replica: float
    min_replicas: int = 1
    max_replicas: int = 1
    scale_to_zero_after_s: float = 600.0
    up: Rules = SCALE_UP
    down: Rules = SCALE_DOWN


@dataclass(frozen=True)
class History:
    recommendations: tuple[tuple[float, int], ...] = ()
    """(since when, replicas): an entry per change of the recommendation, standing until the
    next. A steady pool's history then stays as it is from look to look, and so does the status
    that keeps it: no write and no watch event every few seconds per pool."""
    events: tuple[tuple[float, int], ...] = ()
    """(when, replicas added (+) or removed (-))."""


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str
    history: History = field(default_factory=History)


def raw(load: float, replicas: int, per_replica: float) -> int:
    """Replicas for the load at the target, HPA's rule with its tolerance."""
    if replicas > 0 and abs(load / (replicas * per_replica) - 1) <= TOLERANCE:
        return replicas
    return math.ceil(load / per_replica - 1e-9)


def _standing(
    recs: tuple[tuple[float, int], ...], now: float, span: float
) -> tuple[tuple[float, int], ...]:
    """The recommendations that stood at some time in the last ``span`` seconds (the latest
    always: it stands now)."""
    last = len(recs) - 1
    return tuple(r for i, r in enumerate(recs) if i == last or now - recs[i + 1][0] < span)


def _allowance(
    rules: Rules, replicas: int, events: tuple[tuple[float, int], ...], now: float, up: bool
) -> int | None:
    """How far ``rules`` let the count move now from ``replicas``; None if unlimited."""
    if rules.select == "Disabled":
        return 0
    if not rules.policies:
        return None
    limits = []
    for policy in rules.policies:
        moved = sum(d for t, d in events if now - t < policy.period_s and (d > 0) == up)
        start = replicas - moved
        step = policy.value if policy.kind == "Pods" else math.ceil(start * policy.value / 100)
        limits.append(max(0, step - abs(moved)))
    return max(limits) if rules.select == "Max" else min(limits)


def decide(obs: Observation, target: Target, history: History = History()) -> Decision:
    now, current = obs.now, obs.replicas
    keep = max(target.up.stabilization_s, target.down.stabilization_s, 600.0)
    recent = _standing(history.recommendations, now, keep)
    events = tuple((t, d) for t, d in history.events if now - t < keep)
    low, high = target.min_replicas, target.max_replicas

    def done(replicas: int, reason: str, recs: tuple[tuple[float, int], ...]) -> Decision:
        moved = events + (((now, replicas - current),) if replicas != current else ())
        return Decision(replicas, reason, History(recs, moved))

    if current == 0:
        if obs.held > 0:
            # the held requests are the load: a burst at zero wakes as many replicas as it needs
            demand = (obs.load or 0.0) + obs.held
            want = max(1, low, min(high, raw(demand, 0, target.per_replica)))
            return done(min(want, high), f"{obs.held} requests held: waking from zero", recent)
        if low == 0:
            return done(0, "at zero: no request waiting", recent)
    if obs.load is None:
        return done(max(current, low), "no metric: replicas unchanged", recent)
    quiet = obs.last_request_at is None or now - obs.last_request_at >= target.scale_to_zero_after_s
    if low == 0 and quiet and obs.held == 0 and obs.load <= 0:
        return done(0, f"no request for {target.scale_to_zero_after_s:.0f}s: scaling to zero", ())
    floor = max(low, 1)
    want = min(high, max(floor, raw(obs.load, current, target.per_replica)))
    recs = recent if recent and recent[-1][1] == want else recent + ((now, want),)
    if want > current:
        window = [n for _, n in _standing(recs, now, target.up.stabilization_s)]
        want = max(current, min(window))
        allowed = _allowance(target.up, current, events, now, up=True)
        if allowed is not None:
            want = min(want, current + allowed)
        reason = f"load {obs.load:g} over {target.per_replica:g} per replica: up to {want}"
    elif want < current:
        window = [n for _, n in _standing(recs, now, target.down.stabilization_s)]
        want = min(current, max(window))
        allowed = _allowance(target.down, current, events, now, up=False)
        if allowed is not None:
            want = max(want, current - allowed)
        reason = f"load {obs.load:g} under {target.per_replica:g} per replica: down to {want}"
    else:
        reason = f"load {obs.load:g} at {target.per_replica:g} per replica"
    return done(want, reason, recs)


FRESH_S = 30.0
"""A gateway's demand annotation older than this is a gateway that went away: not counted."""


@dataclass(frozen=True)
class GatewayLoad:
    in_flight: int = 0
    held: int = 0
    last_request_at: float | None = None
    cold_start_s: float | None = None


def gateway_load(annotations: dict[str, str], prefix: str, now: float) -> GatewayLoad:
    """The pool's load summed over its gateways' annotations; a stale one still tells when the
    last request came (that survives a gateway restart), but not its counts."""
    in_flight = held = 0
    last: float | None = None
    cold: tuple[float, float] | None = None  # (at, seconds): the latest gateway's word
    for key, raw in annotations.items():
        if not key.startswith(prefix):
            continue
        try:
            data = json.loads(raw)
            at = float(data["at"])
            seen = data.get("lastRequest")
            if seen is not None:
                last = max(last or 0.0, float(seen))
            if data.get("coldStart") is not None and (cold is None or at > cold[0]):
                cold = (at, float(data["coldStart"]))
            if now - at <= FRESH_S:
                in_flight += int(data.get("inFlight") or 0)
                held += int(data.get("held") or 0)
        except (ValueError, KeyError, TypeError):
            continue  # a hand-mangled annotation counts for nothing
    return GatewayLoad(in_flight, held, last, cold[1] if cold else None)


def _rules(given: ScalingRules | None, default: Rules) -> Rules:
    if given is None:
        return default
    policies = tuple(Policy(p.type, p.value, float(p.period_seconds)) for p in given.policies)
    window = given.stabilization_window_seconds
    return Rules(
        default.stabilization_s if window is None else float(window),
        policies or default.policies,
        given.select_policy,
    )


def target_of(spec: Autoscaling) -> Target:
    return Target(
        per_replica=spec.target,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        scale_to_zero_after_s=duration_seconds(spec.scale_to_zero_after),
        up=_rules(spec.behavior.scale_up, SCALE_UP),
        down=_rules(spec.behavior.scale_down, SCALE_DOWN),
    )
