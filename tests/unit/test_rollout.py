import pytest

from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.core.rollout import plan, resolve, revision
from gpucost.core.snapshot import PlacedPod


def pod(replica, rev="a", ready=True, phase="Running", deleting=False):
    return PlacedPod(
        f"web-{replica}", "u", replica, "n", (0,), (), 1, phase, ready, deleting, revision=rev
    )


def spec(**extra):
    return InferencePoolSpec.model_validate({"image": "i", "gpu": {"memoryMiB": 1}, **extra})


def test_creates_missing_ordinals_lowest_first():
    assert plan(4, [pod(1)], "a", 1, 0).create == (0, 2, 3)


def test_scale_down_deletes_unready_then_the_highest_ordinals():
    result = plan(1, [pod(0), pod(1), pod(2, ready=False)], "a", 1, 0)
    assert result.delete == ("web-1", "web-2") and result.create == ()


def test_failed_pod_is_deleted_and_replaced_under_a_new_ordinal():
    result = plan(2, [pod(0), pod(1, phase="Failed")], "a", 1, 0)
    assert result.delete == ("web-1",) and result.create == (2,)


def test_terminating_pods_are_not_deleted_twice_and_their_names_are_not_reused():
    result = plan(1, [pod(0, deleting=True)], "a", 1, 0)
    assert result.delete == () and result.create == (1,)


def test_rollout_surges_one_and_deletes_an_old_replica_only_once_a_new_one_is_ready():
    old = [pod(i, "a") for i in range(3)]
    first = plan(3, old, "b", 1, 0)
    assert first.create == (3,) and first.delete == ()
    waiting = plan(3, [*old, pod(3, "b", ready=False)], "b", 1, 0)
    assert waiting.create == () and waiting.delete == ()
    ready = plan(3, [*old, pod(3, "b")], "b", 1, 0)
    assert ready.delete == ("web-2",) and ready.create == (4,)


def test_ready_replicas_never_drop_below_desired_through_a_whole_rollout():
    pods = [pod(i, "a") for i in range(4)]
    for _ in range(20):
        step = plan(4, pods, "b", 1, 0)
        pods = [p for p in pods if p.name not in step.delete]
        assert sum(p.ready for p in pods) >= 4
        pods += [pod(i, "b", ready=False) for i in step.create]
        # the new pods turn Ready before the next look
        pods = [pod(p.replica, p.revision) for p in pods]
    assert {p.revision for p in pods} == {"b"} and len(pods) == 4


def test_max_unavailable_lets_a_rollout_without_surge_replace_in_place():
    step = plan(3, [pod(i, "a") for i in range(3)], "b", 0, 1)
    assert step.delete == ("web-2",) and step.create == (3,)


def test_old_unready_replicas_go_at_once():
    step = plan(2, [pod(0, "a"), pod(1, "a", ready=False)], "b", 1, 0)
    assert step.delete == ("web-1",) and step.create == (2, 3)  # 1 old + 2 new: within surge


def test_a_stalled_rollout_removes_its_unready_pods_and_keeps_the_old_ones():
    pods = [pod(0, "a"), pod(1, "a"), pod(2, "b", ready=False)]
    step = plan(2, pods, "b", 1, 0, stalled=True)
    assert step.delete == ("web-2",) and step.create == () and step.old == 2


def test_percentages_resolve_like_deployment():
    assert resolve("25%", 10, round_up=True) == 3 and resolve("25%", 10, round_up=False) == 2
    assert resolve(2, 10, round_up=True) == 2


def test_revision_follows_what_shapes_a_pod_and_ignores_the_replica_count():
    base = revision(spec())
    assert revision(spec(replicas=5)) == base
    assert revision(spec(image="j")) != base
    assert revision(spec(gpu={"memoryMiB": 2})) != base
    assert revision(spec(template={"spec": {"serviceAccountName": "sa"}})) != base


def test_both_zero_surge_and_unavailable_is_refused():
    with pytest.raises(ValueError, match="cannot both be 0"):
        spec(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
