"""An httpx client that reaches nodes through a SOCKS5 proxy (the swarm backend's access
container) and never hangs on it.

httpcore reads the proxy's SOCKS5 replies without a timeout. The proxy answers a CONNECT only
once its own connection to the node is made or has failed, which for a node whose machine is
cut off takes the kernel's SYN retries (about two minutes). Every read and write without a
timeout of its own gets `handshake_timeout` here, so such a request fails with
`httpx.ReadTimeout` (a `TransportError`, i.e. "unreachable") after that long. httpx has no hook
for a network backend, so the transport's connection pool is replaced by one built with it.

A proxy that closes the connection during the handshake, as a published port does while the
proxy behind it is not listening yet, makes socksio raise its own `ProtocolError`, which
neither httpcore nor httpx maps; here it is an `httpx.ProxyError` (a `TransportError` too).
`socks5_answers` says whether a proxy answers the SOCKS5 greeting at all.
"""

from __future__ import annotations

import socket
import ssl
import typing

import httpcore
import httpx
import socksio

from harness.node.tls import plain_http


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._timeout if timeout is None else timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._timeout if timeout is None else timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        secured = self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _BoundedStream(secured, self._timeout)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, timeout: float) -> None:
        self._backend = httpcore.SyncBackend()
        self._timeout = timeout

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, self._timeout if timeout is None else timeout, local_address, socket_options
        )
        return _BoundedStream(stream, self._timeout)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, timeout, socket_options)
        return _BoundedStream(stream, self._timeout)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _SocksTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except socksio.ProtocolError as exc:
            raise httpx.ProxyError(
                f"the SOCKS5 proxy broke off the handshake: {exc}", request=request
            ) from exc


def socks5_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a SOCKS5 proxy at `host`:`port` answers a greeting offering no authentication
    with its acceptance (a port that accepts and closes, or says anything else, does not)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
            return connection.recv(2) == b"\x05\x00"
    except OSError:
        return False


def socks_client(proxy: str, handshake_timeout: float = 5.0, timeout: float = 5.0) -> httpx.Client:
    """A client whose every request goes through the SOCKS5 proxy `proxy`
    (`socks5://HOST:PORT`; host names are resolved by the proxy)."""
    url = httpx.URL(proxy)
    if url.scheme not in ("socks5", "socks5h"):
        raise ValueError(f"{proxy!r} is not a socks5:// URL")
    transport = _SocksTransport(proxy=proxy, verify=plain_http())
    transport._pool = httpcore.SOCKSProxy(
        proxy_url=httpcore.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=b"/"
        ),
        network_backend=_BoundedBackend(handshake_timeout),
    )
    return httpx.Client(transport=transport, trust_env=False, timeout=timeout)
