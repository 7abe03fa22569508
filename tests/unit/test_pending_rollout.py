"""What the autoscaler buys for: a rollout's surge replica that fits nowhere, and a pool waking
from zero (no batch window for it)."""

from gpucost.core.snapshot import PlacedPod
from gpucost.handlers.autoscaler import pending_work
from gpucost.state.cluster import Cluster


def live(uid: str, replica: int) -> PlacedPod:
    return PlacedPod(f"web-{replica}", uid, replica, "n", (0,), (), 1, "Running", True, False)


def pool(status: dict) -> dict:
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
        "spec": {"image": "i", "replicas": 2, "gpu": {"memoryMiB": 1000}},
        "status": {"unplacedReplicas": 1, **status},
    }


def pending(status: dict) -> int:
    cluster = Cluster({}, [], [live("u", 0), live("u", 1)], {}, [], {})
    return sum(p.count for p in pending_work([pool(status)], cluster, []))


def test_a_surge_replica_of_a_rollout_is_pending():
    assert pending({"updateRevision": "b", "currentRevision": "a"}) == 1


def test_without_a_rollout_a_pool_with_all_its_pods_has_nothing_pending():
    assert pending({"updateRevision": "a", "currentRevision": "a"}) == 0


def test_an_autoscaled_pool_with_no_ready_replica_is_pending_as_waking():
    body = pool({})
    body["spec"] |= {"replicas": 1, "autoscaling": {"minReplicas": 0, "maxReplicas": 3,
                                                    "target": 4}}  # fmt: skip
    cluster = Cluster({}, [], [], {}, [], {})
    (work,) = pending_work([body], cluster, [])
    assert work.waking and work.count == 1
    body["status"]["readyReplicas"] = 1
    (work,) = pending_work([body], cluster, [])
    assert not work.waking
