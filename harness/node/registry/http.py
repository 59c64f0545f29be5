"""The registry over HTTP: a store served to nodes that share no folder with it, and the
source a node's orchestrator (and ic-boundary) reads it from.

As the IC's nodes fetch registry versions from the NNS instead of reading a file, a node on
another machine asks the testnet's registry service. The service serves a `LocalStore`
directory read-only; versions are immutable, so a version once served never changes:

- ``GET /api/v1/registry/latest`` → ``{"latest": N}`` (0 while the store is empty);
- ``GET /api/v1/registry/versions/N`` → the stored JSON of version N, exactly as in the
  store's file (404 when absent).

Anything else is a 404 (or 405 for another method), in plain text naming the paths.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from urllib.parse import urlsplit

from harness.node.registry.records import RegistryFormatError, RegistrySnapshot
from harness.node.registry.store import LocalStore, parse_version
from harness.node.serve import ASGIApp, Receive, Scope, Send
from harness.node.tls import verify_for

PREFIX = "/api/v1/registry"
LATEST_PATH = f"{PREFIX}/latest"
VERSIONS_PATH = f"{PREFIX}/versions/"
MAX_VERSION_DIGITS = 20


class RegistryUnreachable(OSError):
    """The registry service did not answer (or answered nonsense): keep the last good
    version and ask again on the next poll."""


def registry_http_app(store: LocalStore) -> ASGIApp:
    """Serve `store`'s versions under `PREFIX`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, f"{scope['method']} is not allowed: the registry is read-only")
            return
        if path == LATEST_PATH:
            body = json.dumps({"latest": store.latest_version()}).encode()
            await _send(send, 200, body, b"application/json")
            return
        number = path.removeprefix(VERSIONS_PATH)
        if path.startswith(VERSIONS_PATH) and number.isascii() and number.isdigit():
            if len(number) <= MAX_VERSION_DIGITS and int(number) > 0:
                try:
                    body = store.read_bytes(int(number))
                except RegistryFormatError:
                    pass  # absent
                else:
                    await _send(send, 200, body, b"application/json")
                    return
            await _send(send, 404, f"no registry version {number}")
            return
        await _send(send, 404, f"not found: {path} (served: {LATEST_PATH}, {VERSIONS_PATH}N)")

    return app


async def _send(
    send: Send, status: int, body: bytes | str, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    payload = body if isinstance(body, bytes) else (body + "\n").encode()
    headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class HttpSource:
    """A `RegistrySource` that asks a registry service (see the module docstring), over one
    kept-alive connection of the standard library's `http.client` (TLS from `harness.node.tls`
    when the URL is https). Blocking: call it from a thread in an event loop
    (`RegistryClient.poll` is run so); calls from several threads take turns.

    `timeout` bounds connecting and each send to and wait for the service. Every failure,
    a URL that is no http:// or https:// URL included, is a `RegistryUnreachable` raised by
    the call that meets it, as for a service that is down."""

    blocking = True

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _get(self, path: str) -> tuple[int, bytes]:
        """The status and body of ``GET <url><path>``."""
        with self._lock:
            try:
                return self._exchange(path)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise RegistryUnreachable(
                    f"registry {self.url}{path}: {_reason(exc, self.timeout)}"
                ) from None

    def _exchange(self, path: str) -> tuple[int, bytes]:
        reused = self._connection is not None
        if self._connection is None:
            self._connection = self._connect()
        try:
            self._connection.request("GET", urlsplit(self.url).path + path)
            response = self._connection.getresponse()
            body = response.read()
        except (ConnectionResetError, BrokenPipeError):
            # (http.client's RemoteDisconnected is a ConnectionResetError too.)
            if not reused:
                raise
            # The service closed the kept-alive connection since the last call: once more, on
            # a new connection (a GET, safe to repeat).
            self._drop()
            return self._exchange(path)
        if response.will_close:
            self._drop()
        return response.status, body

    def _connect(self) -> http.client.HTTPConnection:
        try:
            parts = urlsplit(self.url)
            port = parts.port  # a ValueError when it is no number
        except ValueError as exc:
            raise _NotConnected(f"not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _NotConnected("not an http:// or https:// URL")
        connection = (
            http.client.HTTPSConnection(
                parts.hostname, port, timeout=self.timeout, context=verify_for([self.url])
            )
            if parts.scheme == "https"
            else http.client.HTTPConnection(parts.hostname, port, timeout=self.timeout)
        )
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise _NotConnected(f"cannot connect: {_reason(exc, self.timeout)}") from None
        return connection

    def latest_version(self) -> int:
        status, body = self._get(LATEST_PATH)
        if status != 200:
            raise RegistryUnreachable(f"registry {self.url}{LATEST_PATH} answered {status}")
        try:
            latest = json.loads(body)["latest"]
        except (ValueError, RecursionError, KeyError, TypeError):
            latest = None
        if not isinstance(latest, int) or isinstance(latest, bool) or latest < 0:
            raise RegistryUnreachable(
                f'registry {self.url}{LATEST_PATH}: expected {{"latest": N}}, got {body[:200]!r}'
            )
        return latest

    def read(self, version: int) -> RegistrySnapshot:
        where = f"{self.url}{VERSIONS_PATH}{version}"
        status, body = self._get(f"{VERSIONS_PATH}{version}")
        if status == 404:
            raise RegistryFormatError(f"{where}: no such registry version")
        if status != 200:
            raise RegistryUnreachable(f"{where} answered {status}")
        return parse_version(body, version, where)


class _NotConnected(OSError):
    """No connection to the service; the text says why."""


def _reason(exc: OSError | http.client.HTTPException, timeout: float) -> str:
    """What went wrong, in words: the OS's for an OS error, not Python's ``[Errno 111] ...``."""
    if isinstance(exc, _NotConnected):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the service closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        more = "" if exc.expected is None else f", {exc.expected} more expected"
        return f"broken answer: cut short after {len(exc.partial)} bytes of its body{more}"
    if isinstance(exc, http.client.HTTPException):
        return f"broken answer: {type(exc).__name__}: {' '.join(str(exc).split())}"
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
