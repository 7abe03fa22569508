"""A PersistentVolumeClaim bound to a hostPath PersistentVolume, for the example CompressionJob's
storage in the dev cluster (KWOK runs no kubelet, so nothing is written there)."""

from __future__ import annotations

import yaml

from gpucost.devcluster.controlplane import ControlPlane


def local_claim(cp: ControlPlane, name: str, namespace: str = "default") -> None:
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{name}"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "hostPath": {"path": f"/tmp/gpucost-{namespace}-{name}"},
            "claimRef": {"namespace": namespace, "name": name},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "volumeName": f"{namespace}-{name}",
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([volume, claim]))
