"""The harness's SOCKS5 client: a proxy that never answers a CONNECT (its own connection to a
cut-off machine hangs) makes a request fail as unreachable after the handshake timeout, instead
of holding the harness for minutes; a proxy that closes during the handshake is a transport
error too; and whether a proxy answers at all (what the swarm backend waits for)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from harness.driver.socks import socks5_answers, socks_client


def _serving(handle: Callable[[socket.socket], None]) -> Iterator[str]:
    """A port on loopback whose every connection goes to `handle` (in one thread), as a
    socks5:// URL; stopped, with every connection closed, when the generator ends."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            handle(client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"socks5://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.fixture
def stalling_proxy() -> Iterator[str]:
    """A SOCKS5 server that accepts the greeting and then never answers the CONNECT."""
    held: list[socket.socket] = []

    def stall(client: socket.socket) -> None:
        client.recv(16)  # version 5, n methods, methods
        client.sendall(b"\x05\x00")  # no authentication
        held.append(client)  # the CONNECT is read by nobody, answered never

    yield from _serving(stall)
    for client in held:
        client.close()


def test_a_proxy_that_never_connects_is_reported_unreachable_in_bounded_time(
    stalling_proxy: str,
) -> None:
    with socks_client(stalling_proxy, handshake_timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(httpx.TransportError):
            client.get("http://subnet-0-node-0:8080/api/v2/status")
        assert time.monotonic() - started < 5


def test_only_socks5_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="is not a socks5:// URL"):
        socks_client("http://127.0.0.1:3128")


@pytest.fixture
def closing_proxy() -> Iterator[str]:
    """A port that reads the SOCKS5 greeting and closes without a word, as the engine's
    published port of a proxy that is not listening yet may."""

    def close(client: socket.socket) -> None:
        client.recv(16)
        client.close()

    yield from _serving(close)


def test_a_proxy_that_closes_during_the_handshake_is_a_transport_error(
    closing_proxy: str,
) -> None:
    # socksio's own ProtocolError("Malformed reply") escaped httpx unmapped, so waits that take
    # a TransportError for "not yet" failed at once (a swarm testnet's start, issue 23).
    with socks_client(closing_proxy) as client, pytest.raises(httpx.ProxyError) as raised:
        client.get("http://registry:8000/api/v1/registry/latest")
    assert isinstance(raised.value, httpx.TransportError)
    assert "the SOCKS5 proxy broke off the handshake: Malformed reply" in str(raised.value)


def test_socks5_answers_only_when_the_greeting_is_accepted(
    stalling_proxy: str, closing_proxy: str
) -> None:
    def address(proxy: str) -> tuple[str, int]:
        url = httpx.URL(proxy)
        assert url.host and url.port
        return url.host, url.port

    assert socks5_answers(*address(stalling_proxy))
    assert not socks5_answers(*address(closing_proxy))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        assert not socks5_answers("127.0.0.1", unused.getsockname()[1])  # nothing listens
