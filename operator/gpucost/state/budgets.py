"""Budget verdicts the workload handlers enforce, read from the budgets' status (not kept in
memory), so a restarted operator keeps capping from its first reconcile."""

from __future__ import annotations

from typing import Any

from gpucost.adapters.kube import Kube
from gpucost.api.common import condition


def ref(meta: dict[str, Any]) -> str:
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def enforcing(kube: Kube, namespace: str, action: str) -> str | None:
    """The first Exceeded budget covering ``namespace`` that enforces ``action`` (an Enforcement
    field's wire name), as "Kind name"; None when nothing holds the namespace back."""
    for obj in kube.budgets(namespace):
        status = obj.get("status") or {}
        enforce = (obj.get("spec") or {}).get("enforce")
        if (
            enforce is not None
            and enforce.get(action, True)
            and condition(status, "Exceeded").get("status") == "True"
            and namespace in (status.get("namespaces") or [])
        ):
            return f"{obj['kind']} {ref(obj['metadata'])}"
    return None
