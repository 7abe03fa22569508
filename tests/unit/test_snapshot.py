import json

from gpucost import names
from gpucost.core.snapshot import allocations, gpu_node, placed_pod
from tests.builders import pool_spec


def node(labels=None, annotations=None, ready="True", unschedulable=False):
    return {
        "metadata": {"name": "n1", "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


POOL = {names.LABEL_NODEPOOL: "p"}


def test_agent_annotation_wins_over_labels():
    gpus = [{"index": 0, "uuid": "GPU-x", "model": "A10G", "memoryMiB": 23028}]
    n = gpu_node(
        node({**POOL, names.LABEL_GPU_COUNT: "8"}, {names.ANNOTATION_GPUS: json.dumps(gpus)}),
        {"p": pool_spec()},
    )
    assert [(g.index, g.uuid, g.memory_mib) for g in n.gpus] == [(0, "GPU-x", 23028)]


def test_broken_annotation_falls_back_to_feature_discovery_labels():
    labels = {
        **POOL,
        names.LABEL_GPU_COUNT: "2",
        names.LABEL_GPU_MEMORY: "16384",
        names.LABEL_GPU_PRODUCT: "T4",
    }
    n = gpu_node(node(labels, {names.ANNOTATION_GPUS: "{not json"}), {"p": pool_spec()})
    assert [(g.model, g.memory_mib, g.uuid) for g in n.gpus] == [
        ("T4", 16384, None),
        ("T4", 16384, None),
    ]


def test_no_labels_falls_back_to_the_pool_shape():
    n = gpu_node(node(POOL), {"p": pool_spec()})
    assert len(n.gpus) == 8 and n.gpus[0].memory_mib == 81920


def test_nodes_outside_known_pools_are_ignored():
    assert gpu_node(node({names.LABEL_NODEPOOL: "unknown"}), {"p": pool_spec()}) is None
    assert gpu_node(node({}), {"p": pool_spec()}) is None


def test_not_ready_or_cordoned_nodes_are_not_schedulable():
    pools = {"p": pool_spec()}
    assert gpu_node(node(POOL), pools).schedulable
    assert not gpu_node(node(POOL, ready="False"), pools).schedulable
    assert not gpu_node(node(POOL, unschedulable=True), pools).schedulable


def pod(phase="Running", indices="0,1", mib="81920", deleting=False):
    meta = {
        "name": "web-0",
        "labels": {names.LABEL_OWNER_UID: "u1", names.LABEL_REPLICA: "0"},
        "annotations": {
            names.ANNOTATION_NODE: "n1",
            names.ANNOTATION_GPU_INDICES: indices,
            names.ANNOTATION_GPU_MEMORY: mib,
        },
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def test_placed_pod_reads_back_the_placement():
    p = placed_pod(pod())
    assert (p.node, p.gpu_indices, p.memory_mib, p.replica, p.owner_uid) == (
        "n1",
        (0, 1),
        163840,
        0,
        "u1",
    )


def test_finished_pods_hold_no_memory_but_terminating_ones_do():
    held = allocations(
        [placed_pod(pod("Succeeded")), placed_pod(pod("Running", "3", "100", deleting=True))]
    )
    assert [(a.gpu_index, a.memory_mib) for a in held] == [(3, 100)]


def test_pod_without_placement_annotations_is_not_a_placed_pod():
    assert placed_pod({"metadata": {"name": "x", "annotations": {}}}) is None


def test_placed_pod_says_whether_it_is_bound_and_since_when_the_scheduler_refuses_it():
    refused = {
        **pod("Pending"),
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastTransitionTime": "2026-12-01T00:00:10Z",
                    "message": "0/2 nodes are available",
                }
            ],
        },
    }
    p = placed_pod(refused)
    assert (p.bound, p.unschedulable_since) == (False, 1796083210.0)
    assert p.scheduler_message == "0/2 nodes are available"
    bound = placed_pod({**pod(), "spec": {"nodeName": "n1"}})
    assert bound.bound and bound.unschedulable_since is None
