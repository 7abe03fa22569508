"""Objects the operator keeps beside its own (a pool's Service, inference-extension pool and
PodDisruptionBudget), applied only when they change.

A pool reconciles on every batch of pod events; applying its three objects each time was three
writes per reconcile for nothing. What was last applied is remembered for a while (a restart or
the expiry re-applies once, so an object deleted by hand comes back within ``TTL``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from gpucost.adapters.kube import Kube, namespace_terminating
from gpucost.core.endpoint import EXTENSION_GROUP, EXTENSION_PLURAL, EXTENSION_VERSION

TTL = 300.0
log = logging.getLogger(__name__)


def _key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['apiVersion']}/{obj['kind']}/{meta['namespace']}/{meta['name']}"


class ObjectSync:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _fresh(self, key: str, digest: str, now: float) -> bool:
        with self._lock:
            seen = self._seen.get(key)
            return seen is not None and seen[0] == digest and now - seen[1] < TTL

    def _remember(self, key: str, digest: str, now: float) -> None:
        with self._lock:
            self._seen[key] = (digest, now)

    def sync(self, kube: Kube, apply: list[dict[str, Any]], remove: list[dict[str, Any]]) -> None:
        """A refused apply is logged and tried again next time: it must not stop the pool's
        placement and status, which the same reconcile still has to write."""
        now = time.monotonic()
        for obj in apply:
            digest = json.dumps(obj, sort_keys=True)
            if self._fresh(_key(obj), digest, now):
                continue
            try:
                kube.apply(obj)
            except ApiException as e:
                if not namespace_terminating(e):  # its pool goes with the namespace
                    log.warning("could not apply %s: %s %s", _key(obj), e.status, e.reason)
                continue
            self._remember(_key(obj), digest, now)
        for obj in remove:
            if not self._fresh(_key(obj), "", now):
                kube.delete_object(obj)
                self._remember(_key(obj), "", now)


class Served:
    """Whether an API is served, asked again at most every ``every`` seconds (a CRD installed
    after the operator started is picked up, without a discovery call per reconcile)."""

    def __init__(self, group: str, version: str, plural: str, every: float = 10.0) -> None:
        self.api, self.every = (group, version, plural), every
        self._known: tuple[bool, float] | None = None

    def served(self, kube: Kube) -> bool:
        now = time.monotonic()
        if self._known is None or now - self._known[1] > self.every:
            self._known = (kube.served(*self.api), now)
        return self._known[0]


OBJECTS = ObjectSync()
EXTENSION = Served(EXTENSION_GROUP, EXTENSION_VERSION, EXTENSION_PLURAL)
