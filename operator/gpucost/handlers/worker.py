"""A background thread that kopf's event handlers wake: the cheap handler records what happened
and returns; the thread does the work, once per batch of events."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable


class Worker:
    def __init__(self, name: str) -> None:
        self._name = name
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def _start_once(self) -> None:
        """Under ``_wake``, from a kopf event handler: the thread runs in a copy of that handler's
        context, which kopf.event needs and a bare thread would not have."""
        if self._thread is None:
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._run,), name=self._name, daemon=True
            )
            self._thread.start()

    def _wait(self, ready: Callable[[], object], timeout: float | None = None) -> bool:
        """Under ``_wake``: until ``ready()`` or the timeout; False once stopping."""
        self._wake.wait_for(lambda: ready() or self._stopping, timeout=timeout)
        return not self._stopping

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        raise NotImplementedError
