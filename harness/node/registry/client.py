"""The orchestrator's view of the registry: the newest good version, never a crash on bad input.

`RegistryClient.poll()` returns the newest version that parses. A corrupt or half-written
version is reported once (log line and the `on_error` callback, which the orchestrator counts in
a metric) and skipped; the client keeps acting on the last good version until a later good one
appears. A bad version is read again on later polls (a writer that does not follow the store's
write protocol may still be finishing it), but reported only once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from harness.node.registry.records import RegistryFormatError, RegistrySnapshot
from harness.node.registry.store import LocalStore

log = logging.getLogger(__name__)


class RegistrySource(Protocol):
    """Where versions come from: a local store directory (`LocalStore`) or a registry service
    (`harness.node.registry.http.HttpSource`)."""

    blocking: bool
    """Whether reading may wait (a network request): a poller then reads in a thread."""

    def latest_version(self) -> int: ...

    def read(self, version: int) -> RegistrySnapshot: ...


class RegistryClient:
    """Polls a source and keeps the last good snapshot."""

    def __init__(
        self,
        source: RegistrySource,
        on_error: Callable[[int, Exception], None] | None = None,
    ) -> None:
        self.source = source
        self.on_error = on_error
        self.snapshot: RegistrySnapshot | None = None
        self._reported: set[int] = set()
        self._lock = threading.Lock()

    def poll(self) -> RegistrySnapshot | None:
        """The newest good snapshot (None until one exists). Cheap when nothing changed.
        Blocking (a file read or an HTTP request); callable from several threads."""
        with self._lock:
            return self._poll()

    def _poll(self) -> RegistrySnapshot | None:
        current = self.snapshot.version if self.snapshot else 0
        try:
            latest = self.source.latest_version()
        except OSError as exc:
            log.error("registry source is unreadable, keeping the last good version: %s", exc)
            if self.on_error is not None:
                self.on_error(0, exc)
            return self.snapshot
        for version in range(latest, current, -1):
            try:
                self.snapshot = self.source.read(version)
                break
            except (RegistryFormatError, OSError) as exc:
                if version not in self._reported:
                    self._reported.add(version)
                    self._report(version, exc)
        return self.snapshot

    def _report(self, version: int, exc: Exception) -> None:
        log.error(
            "registry version %d is unusable, keeping the last good version: %s", version, exc
        )
        if self.on_error is not None:
            self.on_error(version, exc)


def open_source(local_store: Path | None, url: str | None) -> RegistrySource:
    """The source a program was told to read: a store directory or a registry service URL
    (exactly one of them)."""
    if (local_store is None) == (url is None):
        raise ValueError("a registry source is a local store directory or a URL, exactly one")
    if url is not None:
        # Imported only here: with it come the registry service's app and uvicorn.
        from harness.node.registry.http import HttpSource

        return HttpSource(url)
    assert local_store is not None
    return LocalStore(local_store)
