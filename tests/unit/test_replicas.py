from gpucost.core.replicas import plan
from gpucost.core.snapshot import PlacedPod


def pod(replica, phase="Running", deleting=False):
    return PlacedPod(
        f"web-{replica}", "u", replica, "n", (0,), (), 1, phase, phase == "Running", deleting
    )


def test_creates_missing_ordinals_lowest_first():
    assert plan(4, [pod(1)]).create == (0, 2, 3)


def test_scale_down_deletes_the_highest_ordinals():
    result = plan(1, [pod(0), pod(1), pod(2)])
    assert result.delete == ("web-1", "web-2") and result.create == ()


def test_failed_pod_is_deleted_and_its_ordinal_waits_until_it_is_gone():
    result = plan(2, [pod(0), pod(1, phase="Failed")])
    assert result.delete == ("web-1",) and result.create == ()
    assert plan(2, [pod(0)]).create == (1,)


def test_terminating_pods_are_not_deleted_twice():
    assert plan(0, [pod(0, deleting=True)]).delete == ()
