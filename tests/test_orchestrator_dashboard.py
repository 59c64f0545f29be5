"""Tests of the dashboard: its text, and the raw TCP server as HTTP clients see it."""

from __future__ import annotations

import asyncio

import httpx
import uvloop

from harness.node.listen import ListenAddress
from harness.node.orchestrator.dashboard import Dashboard, DashboardInfo, ProcessLine, render
from harness.node.serve import bind

INFO = DashboardInfo(
    node_id="node-1",
    registry_version=7,
    subnet="subnet-a",
    processes=[
        ProcessLine("replica", 4242, "running"),
        ProcessLine("ic-gateway", None, "stopped"),
        ProcessLine("ic-boundary", None, "stopped"),
    ],
    replica_version="v3",
    ic_gateway_enabled=False,
    orchestrator_version="1.0.0",
)
EXPECTED = """\
node id: node-1
orchestrator version: 1.0.0
last registry version: 7
subnet id: subnet-a
replica process id: 4242
ic-gateway process id: None
ic-boundary process id: None
replica state: running
ic-gateway state: stopped
ic-boundary state: stopped
replica version: v3
ic-gateway enabled: false
"""


def test_render() -> None:
    assert render(INFO) == EXPECTED


def test_server_answers_get_slash_and_404_for_the_rest(loopback_ip: str) -> None:
    async def raw(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(loopback_ip, port)
        writer.write(request)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    async def scenario() -> None:
        sock = bind(ListenAddress(loopback_ip, 0), "dashboard")
        port = sock.getsockname()[1]
        server = await Dashboard(lambda: INFO).serve(sock)
        async with httpx.AsyncClient() as client:
            ok = await client.get(f"http://{loopback_ip}:{port}/")
            assert (ok.status_code, ok.text) == (200, EXPECTED)
            assert ok.headers["content-type"] == "text/plain; charset=utf-8"
            missing = await client.get(f"http://{loopback_ip}:{port}/metrics")
            assert missing.status_code == 404
            assert missing.text == (
                'Not found. Only "GET / " is supported, found "GET /metrics HTTP/1.1"'
            )
        answer = await raw(port, b"POST / HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 404 NOT FOUND\r\n")
        assert answer.endswith(b'found "POST / HTTP/1.0"')
        # A request cut short (no blank line, then EOF) is answered too.
        reader, writer = await asyncio.open_connection(loopback_ip, port)
        writer.write(b"GET / HTTP/1.0\r\n")
        writer.write_eof()
        assert (await reader.read()).startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()
        server.close()
        await server.wait_closed()

    uvloop.run(scenario())
