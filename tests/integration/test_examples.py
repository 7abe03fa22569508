"""Every file in examples/ applies cleanly and does what its comment says."""

from __future__ import annotations

import yaml

from gpucost.devcluster import binaries
from gpucost.devcluster.storage import local_claim
from tests.integration.conftest import ROOT, condition

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_every_example_is_covered_here():
    assert {p.name for p in EXAMPLES} == {
        "gpunodepool-a100-on-demand.yaml",
        "gpunodepool-a10g-spot.yaml",
        "inferencepool-llm-slices.yaml",
        "inferencepool-embeddings-spot.yaml",
        "inferencepool-whole-gpus.yaml",
        "inferencepool-chat-autoscaled.yaml",
        "compressionjob-quantize.yaml",
        "compressionjob-distill-s3.yaml",
        "gpunodepool-l4-clusterapi.yaml",
        "gpunodepool-a10g-karpenter.yaml",
        "costbudget-team.yaml",
        "clustercostbudget-ml.yaml",
    }


def test_examples_apply_and_inference_pools_become_ready(cluster):
    # Karpenter's own CRDs (from its module), for the karpenter provider's example.
    cluster.kubectl("apply", "--server-side", "-f", str(binaries.bin_dir() / "karpenter-crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    local_claim(cluster.cp, "models")  # the example CompressionJobs' storage
    local_claim(cluster.cp, "scratch")
    for path in EXAMPLES:
        cluster.kubectl("apply", "-f", str(path))
    a10g = cluster.get("gpunodepool", "a10g-karpenter")
    assert a10g["spec"]["provider"]["karpenter"] == {"nodePool": "gpu"}
    assert cluster.get("nodepools.karpenter.sh", "gpu")["spec"]["template"]["spec"][
        "nodeClassRef"
    ] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}
    # Out of the way of the other examples' pools (it is as cheap as a10g-spot, and no Karpenter
    # runs here to launch its claims) and of the Karpenter tests, which make their own NodePool.
    cluster.kubectl("delete", "-f", str(ROOT / "examples" / "gpunodepool-a10g-karpenter.yaml"))
    pools = [doc for p in EXAMPLES for doc in yaml.safe_load_all(p.read_text())]
    inference = [p for p in pools if p["kind"] == "InferencePool"]
    for pool in inference:
        name, ns = pool["metadata"]["name"], pool["metadata"]["namespace"]
        obj = cluster.wait(
            f"{name} ready",
            lambda: (
                (o := cluster.get("inferencepools.gpucost.dev", name, ns))
                and condition(o, "Ready").get("status") == "True"
                and o
            ),
            timeout=180,  # the A10G pools' two nodes are not enough: one more spot node boots
        )
        assert obj["status"]["readyReplicas"] == pool["spec"]["replicas"]
    embeddings = cluster.get("inferencepools.gpucost.dev", "embeddings", "default")["status"][
        "placements"
    ]
    assert {p["node"].rsplit("-", 1)[0] for p in embeddings} == {
        "a10g-spot"
    }  # spot-only pool, A10G only
    chat = cluster.wait(
        "the autoscaled pool's decision",
        lambda: (
            (o := cluster.get("inferencepools.gpucost.dev", "chat", "default"))
            and "autoscaling" in (o.get("status") or {})
            and o["status"]
        ),
    )
    # spot first; no gateway has seen a request, so the warm floor is what it keeps
    assert {p["node"].rsplit("-", 1)[0] for p in chat["placements"]} == {"a10g-spot"}
    assert chat["autoscaling"]["desiredReplicas"] == 1
    seventy = cluster.get("inferencepools.gpucost.dev", "llama-70b", "default")["status"][
        "placements"
    ]
    assert all(len(p["gpuIndices"]) == 2 for p in seventy)
    job = cluster.wait(
        "compression job run",
        lambda: (
            (j := cluster.get("compressionjob", "quantize-support-llama", "default"))
            and (j.get("status") or {}).get("phase") == "Succeeded"
            and j
        ),
        timeout=60,
    )
    # Admitted (the team budget is far from its limit), placed on a spot A10G as it is
    # interruptible;
    # KWOK completes the worker pod at once.
    assert condition(job, "Suspended")["reason"] == "WithinBudget" and job["status"][
        "node"
    ].startswith("a10g-spot")
    distill = cluster.wait(
        "the s3 distillation run",
        lambda: (
            (j := cluster.get("compressionjob", "distill-support-qwen", "default"))
            and (j.get("status") or {}).get("phase") == "Succeeded"
            and j
        ),
        timeout=60,
    )
    worker = cluster.get("job", distill["status"]["jobName"], "default")["spec"]["template"]
    (container,) = worker["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # the store's address and the Secret's keys reach the worker; staging and checkpoints are on
    # the claim, not in the bucket
    assert env["AWS_ENDPOINT_URL"] == "http://seaweedfs-s3.storage.svc:8333"
    assert container["envFrom"] == [{"secretRef": {"name": "team-s3", "optional": True}}]
    args = container["args"]
    assert args[args.index("--checkpoint-dir") + 1].startswith("/data/.gpucost/checkpoints/")
    team = cluster.wait(
        "team budget accounting",
        lambda: (
            (b := cluster.get("costbudget", "team-budget", "default"))
            and condition(b, "Ready").get("status") == "True"
            and b
        ),
    )
    assert team["status"]["namespaces"] == ["default"] and team["status"]["daily"]["limit"] == 300
    assert (
        condition(team, "Exceeded")["status"] == "False"
        and team["status"]["monthly"]["limit"] == 6000
    )
    org = cluster.wait(
        "ml-org budget accounting",
        lambda: (
            (b := cluster.get("clustercostbudget", "ml-org"))
            and condition(b, "Ready").get("status") == "True"
            and b
        ),
    )
    assert org["status"].get("namespaces", []) == [] and org["status"]["monthly"]["limit"] == 50000
    l4 = cluster.get("gpunodepool", "l4-clusterapi")
    assert l4["spec"]["provider"]["machineDeployment"] == {"namespace": "default", "name": "gpu-l4"}
    assert (
        cluster.get("machinedeployment", "gpu-l4", "default")["spec"]["replicas"] == 0
    )  # nothing pending for L4s
    for pool in inference:
        cluster.kubectl("delete", "-f", "-", input=yaml.safe_dump(pool))
    for job_name in ("quantize-support-llama", "distill-support-qwen"):
        cluster.kubectl(
            "delete", "compressionjob", job_name, "-n", "default"
        )  # its Job and pod go with it
    cluster.wait("example pods gone", lambda: cluster.list("pods", "default") == [])
    for kind, name in (("costbudget", "team-budget"), ("clustercostbudget", "ml-org")):
        cluster.kubectl(
            "delete", kind, name, *(["-n", "default"] if kind != "clustercostbudget" else [])
        )
