"""The dashboard on port 7070: a raw TCP server answering `GET / ` with plain `key: value` lines.

As the IC's: it reads the request's first bytes (at most 512 count), serves only a request
starting with `GET / `, and answers anything else with 404 and
`Not found. Only "GET / " is supported, found "<first line>"`. Unlike the IC's it sends
Content-Length and `Connection: close`, so ordinary HTTP clients parse the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 512  # the IC reads this much
_DRAIN_LIMIT = 16 * 1024  # read the rest of the headers so closing does not reset the socket
READ_TIMEOUT = 5.0


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
    """Serves `render(info())` on a bound socket."""

    def __init__(self, info: Callable[[], DashboardInfo]) -> None:
        self.info = info

    async def serve(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self._handle, sock=sock)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await self._read_head(reader)
            first = request[:MAX_REQUEST_BYTES]
            if first.startswith(b"GET / "):
                writer.write(_response("200 OK", render(self.info())))
            else:
                line = first.split(b"\n", 1)[0].rstrip(b"\r").decode(errors="replace")
                writer.write(
                    _response(
                        "404 NOT FOUND",
                        f'Not found. Only "GET / " is supported, found "{line}"',
                    )
                )
            await writer.drain()
        except OSError as exc:
            log.debug("dashboard connection failed: %r", exc)
        except Exception:
            log.exception("dashboard request failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> bytes:
        """Read until the end of the headers, EOF, a size limit or a timeout."""
        data = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READ_TIMEOUT):
                while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < _DRAIN_LIMIT:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    data += chunk
        return data
