"""The operator's price sources, read into one book and re-read on an interval.

A source that fails to load or parse keeps its last good quotes and its error is reported on the
pools that need a price (the book never goes empty because one file broke); a source that never
loaded gives nothing. Sources: a file path, an http(s) URL (the price file as the cloud publishes
it, or a mirror of it) or ``configmap:NAMESPACE/NAME`` (every key of the ConfigMap is one table).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import requests
from kubernetes.client.exceptions import ApiException

from gpucost.adapters.kube import Kube
from gpucost.core.prices import Book, PriceError, merge, parse
from gpucost.settings import Prices

log = logging.getLogger(__name__)
CONFIGMAP = "configmap:"


class PriceSources:
    def __init__(self, settings: Prices, kube: Kube | None = None) -> None:
        self.settings = settings
        self.kube = kube
        self._lock = threading.Lock()
        self._books: dict[str, Book] = {}
        self._errors: dict[str, str] = {}
        self._loaded_at: float | None = None
        self._merged: Book = {}

    def book(self, now: float | None = None) -> Book:
        """Every source's quotes, re-read (and merged) when older than the refresh interval; each
        pool's reconcile in between reads the same merged book."""
        now = time.time() if now is None else now
        with self._lock:
            if self._loaded_at is None or now - self._loaded_at >= self.settings.refresh_seconds:
                self._loaded_at = now
                for source in self.settings.sources:
                    self._load(source, now)
                books = (self._books[s] for s in self.settings.sources if s in self._books)
                self._merged = merge(books)
            return self._merged

    def errors(self) -> dict[str, str]:
        with self._lock:
            return dict(self._errors)

    def _load(self, source: str, now: float) -> None:
        try:
            texts = self._read(source)
            book: Book = {}
            for name, (text, as_of) in texts.items():
                book.update(parse(text, name, as_of if as_of is not None else now))
        except (PriceError, OSError, requests.RequestException, ApiException) as e:
            # Stable text (an API error's own str carries response headers), logged once per change.
            message = (
                str(e)
                if isinstance(e, PriceError)
                else f"{source}: {e.status} {e.reason}"
                if isinstance(e, ApiException)
                else f"{source}: {e}"
            )
            if self._errors.get(source) != message:
                log.error("price source not loaded (last good prices kept): %s", message)
            self._errors[source] = message
            return
        self._books[source] = book
        self._errors.pop(source, None)
        log.info("price source %s: %d quotes", source, len(book))

    def _read(self, source: str) -> dict[str, tuple[str, float | None]]:
        """Each text of the source with the time it is from where the source says (a file's
        modification time; a ConfigMap or URL: when read)."""
        if source.startswith(CONFIGMAP):
            return self._configmap(source[len(CONFIGMAP) :])
        if source.startswith(("http://", "https://")):
            resp = requests.get(source, timeout=30)
            resp.raise_for_status()
            return {source: (resp.text, None)}
        with open(source, encoding="utf-8") as f:
            return {source: (f.read(), os.path.getmtime(source))}

    def _configmap(self, ref: str) -> dict[str, tuple[str, float | None]]:
        namespace, _, name = ref.partition("/")
        if not name or self.kube is None:
            raise PriceError(f"{CONFIGMAP}{ref}:1: name it as configmap:NAMESPACE/NAME")
        data = self.kube.core.read_namespaced_config_map(name, namespace).data or {}
        return {f"{CONFIGMAP}{ref}/{key}": (text, None) for key, text in sorted(data.items())}
