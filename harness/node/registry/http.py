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

import json

import httpx

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
    """A `RegistrySource` that asks a registry service (see the module docstring). Blocking:
    call it from a thread in an event loop (`RegistryClient.poll` is run so)."""

    blocking = True

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(trust_env=False, timeout=timeout, verify=verify_for([url]))

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            return self._http.get(self.url + path)
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(f"registry {self.url}{path}: {exc!r}") from None

    def latest_version(self) -> int:
        response = self._get(LATEST_PATH)
        if response.status_code != 200:
            raise RegistryUnreachable(
                f"registry {self.url}{LATEST_PATH} answered {response.status_code}"
            )
        try:
            latest = response.json()["latest"]
        except (ValueError, KeyError, TypeError):
            latest = None
        if not isinstance(latest, int) or isinstance(latest, bool) or latest < 0:
            raise RegistryUnreachable(
                f'registry {self.url}{LATEST_PATH}: expected {{"latest": N}}, got '
                f"{response.content[:200]!r}"
            )
        return latest

    def read(self, version: int) -> RegistrySnapshot:
        where = f"{self.url}{VERSIONS_PATH}{version}"
        response = self._get(f"{VERSIONS_PATH}{version}")
        if response.status_code == 404:
            raise RegistryFormatError(f"{where}: no such registry version")
        if response.status_code != 200:
            raise RegistryUnreachable(f"{where} answered {response.status_code}")
        return parse_version(response.content, version, where)
