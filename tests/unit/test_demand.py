"""The demand decision: load in, replicas out, with the behaviour windows and scale to zero."""

from gpucost.core.demand import (
    SCALE_DOWN,
    History,
    Observation,
    Policy,
    Rules,
    Target,
    decide,
)

TARGET = Target(per_replica=8, min_replicas=1, max_replicas=20)


def test_load_over_target_scales_up_at_once_within_the_rate_policy():
    d = decide(Observation(now=100, replicas=2, load=80), TARGET)
    assert d.replicas == 6  # wants 10; Pods policy allows +4 per 15 s (Percent +2): the max wins
    again = decide(Observation(now=105, replicas=6, load=80), TARGET, d.history)
    assert again.replicas == 6  # the 15 s period spent its +4 already
    later = decide(Observation(now=116, replicas=6, load=80), TARGET, again.history)
    assert later.replicas == 10


def test_within_tolerance_nothing_moves():
    assert decide(Observation(now=0, replicas=4, load=33), TARGET).replicas == 4


def test_scale_down_waits_for_the_stabilization_window_and_goes_one_a_minute():
    history = History()
    now = 0.0
    replicas = 6
    d = decide(Observation(now=now, replicas=replicas, load=48), TARGET, history)
    history = d.history
    seen = []
    for step in range(1, 40):
        now = step * 15.0
        d = decide(Observation(now=now, replicas=replicas, load=8), TARGET, history)
        history, replicas = d.history, d.replicas
        seen.append((now, replicas))
    first_drop = next(t for t, r in seen if r < 6)
    assert first_drop > SCALE_DOWN.stabilization_s
    drops = [t for (t, r), (_, prev) in zip(seen[1:], seen) if r < prev]
    assert all(b - a >= 60 for a, b in zip(drops, drops[1:]))


def test_quiet_pool_goes_to_zero_only_after_scale_to_zero_after():
    target = Target(per_replica=8, min_replicas=0, max_replicas=4, scale_to_zero_after_s=600)
    busy = decide(Observation(now=1000, replicas=1, load=0, last_request_at=500), target)
    assert busy.replicas == 1
    idle = decide(Observation(now=1200, replicas=1, load=0, last_request_at=500), target)
    assert idle.replicas == 0 and "zero" in idle.reason


def test_a_held_request_wakes_a_pool_at_zero_at_once():
    target = Target(per_replica=8, min_replicas=0, max_replicas=4)
    d = decide(Observation(now=0, replicas=0, load=0, held=3), target)
    assert d.replicas == 1 and "held" in d.reason
    assert decide(Observation(now=0, replicas=0, load=0), target).replicas == 0
    # a burst held at zero wakes the replicas it needs at once (20 at 8 each: 3; 100: the max of 4)
    assert decide(Observation(now=0, replicas=0, load=0, held=20), target).replicas == 3
    assert decide(Observation(now=0, replicas=0, load=0, held=100), target).replicas == 4


def test_bounds_hold_and_an_unreadable_metric_changes_nothing():
    assert decide(Observation(now=0, replicas=3, load=1000), TARGET).replicas <= 20
    assert decide(Observation(now=0, replicas=3, load=None), TARGET).replicas == 3
    capped = Target(per_replica=1, min_replicas=2, max_replicas=3)
    assert decide(Observation(now=0, replicas=2, load=100), capped).replicas == 3


def test_disabled_scale_down_never_removes_replicas():
    target = Target(
        per_replica=8, max_replicas=10, down=Rules(0, (Policy("Pods", 1, 60),), "Disabled")
    )
    assert decide(Observation(now=0, replicas=5, load=0), target).replicas == 5


def test_gateway_annotations_sum_when_fresh_and_keep_the_last_request_when_stale():
    import json

    from gpucost.core.demand import gateway_load

    ann = {
        "gateway.gpucost.dev/a": json.dumps(
            {"inFlight": 3, "held": 1, "lastRequest": 90, "at": 95}
        ),
        "gateway.gpucost.dev/b": json.dumps(
            {"inFlight": 2, "held": 0, "lastRequest": 99, "at": 99}
        ),
        "gateway.gpucost.dev/gone": json.dumps(
            {"inFlight": 9, "held": 9, "lastRequest": 10, "at": 10}
        ),
        "gateway.gpucost.dev/bad": "{",
        "other": "x",
    }
    load = gateway_load(ann, "gateway.gpucost.dev/", now=100)
    assert (load.in_flight, load.held, load.last_request_at) == (5, 1, 99)


def test_a_steady_recommendation_is_kept_once_and_stands_until_it_changes():
    d = decide(Observation(now=100, replicas=6, load=48), TARGET)
    steady = decide(Observation(now=105, replicas=6, load=49), TARGET, d.history)
    assert steady.history == d.history  # nothing new to write to the status
    # the 6 made at 100 stood until the load fell at 1,000: the window still sees it
    fell = decide(Observation(now=1000, replicas=6, load=8), TARGET, steady.history)
    assert fell.replicas == 6
    later = decide(Observation(now=1000 + 301, replicas=6, load=8), TARGET, fell.history)
    assert later.replicas == 5
