"""The dev control plane cleans up after runs that were killed before their teardown."""

from __future__ import annotations

import subprocess
import sys
import uuid

from gpucost.devcluster.controlplane import OWNER, ControlPlane, alive, reap_orphans


def test_clusters_of_dead_runs_are_reaped_and_live_ones_kept(tmp_path):
    orphan = ControlPlane(f"orphan-{uuid.uuid4().hex[:4]}", tmp_path)
    orphan.start()
    pids = orphan.pids()
    assert len(pids) == 5 and all(alive(p) for p in pids)
    assert reap_orphans(tmp_path) == []  # its owner (this process) is alive: keep it
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / "clusters" / orphan.name / OWNER).write_text(dead.stdout.strip())
    assert reap_orphans(tmp_path) == [orphan.name]
    assert not any(alive(p) for p in pids)
