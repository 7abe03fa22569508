"""What the autoscaler reads off pods: the operator's pinned pods count on their node unbound."""

from gpucost import names
from gpucost.core.nodeview import pods_by_node


def test_pinned_unbound_pods_count_on_their_node_and_finished_ones_nowhere():
    pinned = {
        "metadata": {"name": "web-0", "annotations": {names.ANNOTATION_NODE: "n1"}},
        "spec": {},
        "status": {"phase": "Pending"},
    }
    bound = {
        "metadata": {"name": "other"},
        "spec": {"nodeName": "n2"},
        "status": {"phase": "Running"},
    }
    done = {
        "metadata": {"name": "job"},
        "spec": {"nodeName": "n2"},
        "status": {"phase": "Succeeded"},
    }
    unplaced = {"metadata": {"name": "plain"}, "spec": {}, "status": {"phase": "Pending"}}
    by_node = pods_by_node([pinned, bound, done, unplaced])
    assert {n: [p["metadata"]["name"] for p in ps] for n, ps in by_node.items()} == {
        "n1": ["web-0"],
        "n2": ["other"],
    }
