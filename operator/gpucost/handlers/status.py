"""Status writes that happen only when something changed (no write, no watch event, no loop)."""

from __future__ import annotations

from typing import Any

from gpucost.adapters.kube import Kube


def write_if_changed(
    kube: Kube, plural: str, body: dict[str, Any], status: dict[str, Any]
) -> bool:
    current = body.get("status") or {}
    if all(current.get(k) == v for k, v in status.items()):
        return False
    meta = body["metadata"]
    kube.patch_status(plural, meta["name"], status, namespace=meta.get("namespace"))
    return True
