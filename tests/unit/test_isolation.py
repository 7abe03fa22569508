"""Node agent decisions, and the fake NVML held to nvidia-ml-py's surface."""

from __future__ import annotations

import inspect
import json

import pynvml
import pytest

from gpucost.adapters.nvml import NVML, product_label
from gpucost.core.isolation import (
    MPS,
    NVML_LIMIT,
    WATCH_EVICT,
    Slice,
    choose_mode,
    over_slice,
    pod_cgroup,
    usage_by_pod,
)
from gpucost.devcluster.fakenvml import FakeNVML

UID = "1f2e3d4c-5b6a-4789-9abc-def012345678"


def test_pod_uid_and_cgroup_from_both_cgroup_drivers():
    systemd = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-ab12.scope\n"
    )
    assert pod_cgroup(systemd) == (
        UID,
        "/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID.replace('-', '_')}.slice",
    )
    cgroupfs = (
        f"12:memory:/kubepods/besteffort/pod{UID}/0123abcd\n"
        f"11:devices:/kubepods/besteffort/pod{UID}/0123abcd\n"
    )
    assert pod_cgroup(cgroupfs) == (UID, f"/kubepods/besteffort/pod{UID}")
    assert (
        pod_cgroup("0::/system.slice/containerd.service\n") is None
    )  # not a pod: never ours to touch


def test_modes_fall_back_to_watch_evict_and_say_why():
    assert choose_mode(NVML_LIMIT, None, False).running == NVML_LIMIT
    fallback = choose_mode(NVML_LIMIT, "Function Not Found", True)
    assert (fallback.running, fallback.reason) == (
        WATCH_EVICT,
        "the driver cannot limit memory per cgroup (Function Not Found)",
    )
    assert (
        choose_mode(MPS, None, False).running == WATCH_EVICT
        and choose_mode(MPS, None, True).running == MPS
    )


def test_only_our_pods_over_their_slice_past_the_grace_period_are_evicted():
    ours = Slice(UID, "team", "web-0", 0, 20_000)
    used = usage_by_pod(
        {0: [(10, 15_000), (11, 9_000), (12, 70_000)]}, {10: UID, 11: UID, 12: "someone-elses-pod"}
    )
    assert used == {(UID, 0): 24_000, ("someone-elses-pod", 0): 70_000}
    since, over, evict = over_slice([ours], used, {}, now=100.0, grace=30.0)
    assert since == {(UID, 0): 100.0} and [v.used_mib for v in over] == [24_000] and evict == []
    since, _, evict = over_slice([ours], used, since, now=131.0, grace=30.0)
    assert [(v.slice.name, v.seconds) for v in evict] == [("web-0", 31.0)]
    since, over, _ = over_slice([ours], {(UID, 0): 19_000}, since, now=132.0, grace=30.0)
    assert since == {} and over == []  # back under the slice: the clock starts over


def fake(tmp_path, **state) -> FakeNVML:
    path = tmp_path / "nvml.json"
    path.write_text(
        json.dumps(
            {
                "driver": "580.65.06",
                "gpus": [
                    {
                        "uuid": "GPU-0",
                        "name": "NVIDIA A100-SXM4-80GB",
                        "memoryMiB": 81920,
                        "utilization": 40,
                        "processes": [{"pid": 7, "usedMiB": 1000}],
                    },
                    {"uuid": "GPU-1", "name": "NVIDIA A100-SXM4-80GB", "memoryMiB": 81920},
                ],
                **state,
            }
        )
    )
    return FakeNVML(path)


def test_the_fake_has_pynvmls_signatures_for_every_function_it_implements():
    implemented = [n for n in dir(FakeNVML) if n.startswith("nvml")]
    assert len(implemented) >= 17
    for name in implemented:
        real = inspect.signature(inspect.unwrap(getattr(pynvml, name)))
        ours = inspect.signature(getattr(FakeNVML(None), name))  # type: ignore[arg-type]
        assert list(ours.parameters) == list(real.parameters), name


def test_readings_lost_gpus_xids_and_limits_through_the_adapter(tmp_path):
    lib = fake(tmp_path)
    nvml = NVML(lib)
    assert nvml.start() is None and nvml.driver == "580.65.06"
    gpus = nvml.gpus()
    assert [(g.index, g.model, g.memory_mib, g.used_mib, g.utilization) for g in gpus] == [
        (0, "NVIDIA-A100-SXM4-80GB", 81920, 1000, 40),
        (1, "NVIDIA-A100-SXM4-80GB", 81920, 0, 0),
    ]
    assert nvml.memory_limits_supported() is None
    assert nvml.set_memory_limit(0, "/kubepods/pod1", 18_000, 20_000) is None
    assert lib.limits[(0, "/kubepods/pod1")] == (18_000 * 2**20, 20_000 * 2**20)

    state = json.loads(lib.path.read_text())
    state["gpus"][1]["lost"] = True
    state["xids"] = [
        {"gpu": 0, "xid": 13},
        {"gpu": 0, "xid": 79},
    ]  # 13 is an application fault, 79 is fatal
    state["memoryLimits"] = False
    lib.path.write_text(json.dumps(state))
    lost = nvml.gpus()[1]
    assert lost.error == "GPU is lost" and nvml.processes(1) == []
    assert nvml.fatal_xids(2) == [(0, 79)] and nvml.fatal_xids(2) == []  # each event once
    assert nvml.memory_limits_supported() == "Function Not Found"
    assert nvml.errors >= 2


def test_nvml_that_will_not_start_is_an_answer_not_a_crash(tmp_path):
    nvml = NVML(fake(tmp_path, initError="LIBRARY_NOT_FOUND"))
    assert nvml.start() == "NVML unavailable: NVML Shared Library Not Found" and not nvml.ready


@pytest.mark.parametrize(
    "name,label", [("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"), ("Tesla T4", "Tesla-T4")]
)
def test_product_labels_match_gpu_feature_discovery(name, label):
    assert product_label(name) == label
