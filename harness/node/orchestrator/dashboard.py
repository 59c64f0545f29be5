"""The dashboard on port 7070: a raw TCP server answering `GET / ` with plain `key: value` lines.

As the IC's: it reads the request's first bytes (at most 512 count), serves only a request
starting with `GET / `, and answers anything else with 404 and
`Not found. Only "GET / " is supported, found "<first line>"`. Unlike the IC's it sends
Content-Length and `Connection: close`, so ordinary HTTP clients parse the answer, and it reads
a request's body (as its Content-Length says, up to a limit) before answering, so closing does
not reset the connection under a client still sending.

`POST /reset` is ours, not the IC's (the harness's driver puts a reused testnet back in a fresh
one's state with it): a request starting with `POST /reset ` is handed to the `reset` callback,
which has the orchestrator's loop forget every crash-loop backoff in a pass; the answer is 200
with the same lines as `GET / ` as they are after that pass, or 503 and why when the callback
raises `ResetUnavailable` (no pass in time). Without a callback it is a 404 like any other
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 512  # the IC reads this much
_DRAIN_LIMIT = 16 * 1024  # read the headers and body, so closing does not reset the socket
READ_TIMEOUT = 5.0
GET_PREFIX = b"GET / "
RESET_PREFIX = b"POST /reset "  # ours, not the IC's


class ResetUnavailable(Exception):
    """The reset could not be carried out; the message is the 503 answer's body."""


@dataclass(frozen=True)
class ProcessLine:
    name: str
    pid: int | None
    state: str


@dataclass(frozen=True)
class DashboardInfo:
    """What the dashboard shows; built fresh for every request."""

    node_id: str
    registry_version: int | None
    subnet: str  # a subnet id, `Unassigned`, or `Subnet not known yet`
    processes: Sequence[ProcessLine]
    replica_version: str | None
    ic_gateway_enabled: bool
    orchestrator_version: str


# What `POST /reset` calls: returns the lines to show once done, or raises `ResetUnavailable`.
ResetCallback = Callable[[], Awaitable[DashboardInfo]]


def render(info: DashboardInfo) -> str:
    lines = [
        f"node id: {info.node_id}",
        f"orchestrator version: {info.orchestrator_version}",
        f"last registry version: {info.registry_version if info.registry_version else 0}",
        f"subnet id: {info.subnet}",
    ]
    lines += [
        f"{p.name} process id: {p.pid if p.pid is not None else 'None'}" for p in info.processes
    ]
    lines += [f"{p.name} state: {p.state}" for p in info.processes]
    lines += [
        f"replica version: {info.replica_version or 'None'}",
        f"ic-gateway enabled: {'true' if info.ic_gateway_enabled else 'false'}",
    ]
    return "\n".join(lines) + "\n"


def _response(status: str, body: str) -> bytes:
    payload = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


class Dashboard:
    """Serves `render(info())` on a bound socket, and `POST /reset` through `reset` if given:
    `reset()` returns what to show once the reset is done, or raises `ResetUnavailable`."""

    def __init__(
        self, info: Callable[[], DashboardInfo], reset: ResetCallback | None = None
    ) -> None:
        self.info = info
        self.reset = reset

    async def serve(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self._handle, sock=sock)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await self._read_request(reader)
            writer.write(await self._answer(request[:MAX_REQUEST_BYTES]))
            await writer.drain()
        except OSError as exc:
            log.debug("dashboard connection failed: %r", exc)
        except Exception:
            log.exception("dashboard request failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, first: bytes) -> bytes:
        """The response to a request whose first bytes are `first`."""
        if first.startswith(GET_PREFIX):
            return _response("200 OK", render(self.info()))
        if self.reset is not None and first.startswith(RESET_PREFIX):
            try:
                info = await self.reset()
            except ResetUnavailable as exc:
                return _response("503 Service Unavailable", str(exc))
            return _response("200 OK", render(info))
        line = first.split(b"\n", 1)[0].rstrip(b"\r").decode(errors="replace")
        return _response("404 NOT FOUND", f'Not found. Only "GET / " is supported, found "{line}"')

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> bytes:
        """Read the head (until the blank line), then the body its Content-Length announces;
        stop at EOF, a size limit or a timeout, and return what was read."""
        data = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READ_TIMEOUT):
                while (end := _head_end(data)) is None and len(data) < _DRAIN_LIMIT:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return data
                    data += chunk
                if end is None:
                    return data
                wanted = min(end + _content_length(data[:end]), _DRAIN_LIMIT)
                while len(data) < wanted:
                    chunk = await reader.read(wanted - len(data))
                    if not chunk:
                        break
                    data += chunk
        return data


def _head_end(data: bytes) -> int | None:
    """Where the request's body starts (after the blank line), None before the head is whole."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return min(ends, default=None)


def _content_length(head: bytes) -> int:
    """The head's Content-Length, 0 when it has none (or none that makes sense)."""
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                return max(0, int(value.strip()))
            except ValueError:
                return 0
    return 0
