"""Tests of the dashboard: its text, the raw TCP server as HTTP clients see it, and the
harness's `POST /reset` (ours, not the IC's), also through an `Orchestrator` with fake runners."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import uvloop

from harness.node.listen import ListenAddress
from harness.node.orchestrator.args import OrchestratorConfig
from harness.node.orchestrator.dashboard import (
    Dashboard,
    DashboardInfo,
    ProcessLine,
    ResetCallback,
    ResetUnavailable,
    render,
)
from harness.node.orchestrator.fake import FakeRunner
from harness.node.orchestrator.orchestrator import Orchestrator
from harness.node.orchestrator.states import ProcessState
from harness.node.registry import LocalStore, NodeRecord, RegistrySnapshot, SubnetRecord, SubnetType
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


# ------------------------------------------------------------------------- POST /reset
AFTER_RESET = dataclasses.replace(
    INFO,
    processes=[
        ProcessLine("replica", 4243, "running"),
        ProcessLine("ic-gateway", None, "stopped"),
        ProcessLine("ic-boundary", None, "stopped"),
    ],
)


async def raw(ip: str, port: int, *parts: bytes) -> bytes:
    """Send `parts` (one write each), then read the whole answer."""
    reader, writer = await asyncio.open_connection(ip, port)
    for part in parts:
        writer.write(part)
        await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def serve(ip: str, reset: ResetCallback | None, scenario: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        sock = bind(ListenAddress(ip, 0), "dashboard")
        server = await Dashboard(lambda: INFO, reset).serve(sock)
        try:
            await scenario(sock.getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()

    uvloop.run(main())


def test_post_reset_is_handed_to_the_reset_callback(loopback_ip: str) -> None:
    calls: list[None] = []

    async def reset() -> DashboardInfo:
        calls.append(None)
        return AFTER_RESET

    async def scenario(port: int) -> None:
        url = f"http://{loopback_ip}:{port}"
        async with httpx.AsyncClient() as client:
            done = await client.post(f"{url}/reset")
            assert (done.status_code, done.text) == (200, render(AFTER_RESET))
            assert done.headers["content-type"] == "text/plain; charset=utf-8"
            assert done.headers["connection"] == "close"
            assert len(calls) == 1
            # A body (Content-Length) is read and ignored, small or over one read's size.
            for body in (b"{}", b"x" * 10_000):
                with_body = await client.post(f"{url}/reset", content=body)
                assert (with_body.status_code, with_body.text) == (200, render(AFTER_RESET))
            assert len(calls) == 3
            # GET / stays what it was.
            assert (await client.get(f"{url}/")).text == EXPECTED
        # Raw: HTTP/1.0, the body in a later write than the head, bare LF line ends.
        answer = await raw(
            loopback_ip, port, b"POST /reset HTTP/1.0\r\nContent-Length: 5\r\n\r\n", b"hello"
        )
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(render(AFTER_RESET).encode())
        answer = await raw(loopback_ip, port, b"POST /reset HTTP/1.1\nHost: x\n\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        # A Content-Length that makes no sense is ignored, not a failure.
        answer = await raw(loopback_ip, port, b"POST /reset HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert len(calls) == 6

    serve(loopback_ip, reset, scenario)


@pytest.mark.parametrize(
    "request_line",
    ["POST / HTTP/1.1", "GET /reset HTTP/1.1", "PUT /reset HTTP/1.1", "POST /resets HTTP/1.1"],
)
def test_other_methods_and_paths_get_the_404(loopback_ip: str, request_line: str) -> None:
    calls: list[None] = []

    async def reset() -> DashboardInfo:
        calls.append(None)
        return AFTER_RESET

    async def scenario(port: int) -> None:
        request = f"{request_line}\r\nContent-Length: 2\r\n\r\n{{}}".encode()
        answer = await raw(loopback_ip, port, request)
        assert answer.startswith(b"HTTP/1.1 404 NOT FOUND\r\n")
        assert b"Connection: close\r\n" in answer
        assert answer.endswith(
            f'Not found. Only "GET / " is supported, found "{request_line}"'.encode()
        )
        assert calls == []

    serve(loopback_ip, reset, scenario)


def test_post_reset_without_a_callback_is_a_404(loopback_ip: str) -> None:
    async def scenario(port: int) -> None:
        answer = await raw(loopback_ip, port, b"POST /reset HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 404 NOT FOUND\r\n")
        assert answer.endswith(b'found "POST /reset HTTP/1.1"')

    serve(loopback_ip, None, scenario)


def test_a_reset_that_cannot_be_done_is_a_503_saying_why(loopback_ip: str) -> None:
    async def reset() -> DashboardInfo:
        raise ResetUnavailable("Service unavailable. No pass within 10 s.")

    async def scenario(port: int) -> None:
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://{loopback_ip}:{port}/reset")
        assert answer.status_code == 503
        assert answer.reason_phrase == "Service Unavailable"
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.text == "Service unavailable. No pass within 10 s."

    serve(loopback_ip, reset, scenario)


# ------------------------------------------------------------------------- the orchestrator's side
class FakeNode:
    """An `Orchestrator` with fake runners over a registry store where the node runs a replica;
    passes are made by the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.runners: dict[str, FakeRunner] = {}
        self.now = 100.0
        store = LocalStore(tmp_path / "registry")
        store.write(
            RegistrySnapshot(
                1,
                subnets={"subnet-a": SubnetRecord(SubnetType.APPLICATION, ("node-1",), "v1")},
                nodes={"node-1": NodeRecord("127.1.0.2")},
            )
        )
        self.orchestrator = Orchestrator(
            OrchestratorConfig(
                node_id="node-1",
                registry_local_store=store.path,
                data_dir=tmp_path / "data",
                ic_binary_directory=Path("/opt/ic/bin"),
            ),
            runner_factory=lambda name: self.runners.setdefault(name, FakeRunner(name)),
            clock=lambda: self.now,
        )

    @property
    def replica(self) -> FakeRunner:
        return self.runners["replica"]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.orchestrator.metrics.registry.get_sample_value(name, labels)

    def journal(self) -> list[dict[str, object]]:
        path = self.orchestrator.config.layout.events
        return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_orchestrators_next_pass_carries_out_the_reset(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    orchestrator = node.orchestrator

    async def scenario() -> None:
        await orchestrator.run_pass()
        node.replica.exit(1, runtime=0.2)  # dies quickly: backs off 0.5 s
        await orchestrator.run_pass()
        replica = orchestrator.managers[0]
        assert replica.state is ProcessState.BACKOFF
        backoff = "orchestrator_process_restart_backoff_seconds"
        assert node.metric(backoff, process="replica") == 0.5
        assert node.metric("orchestrator_resets_total") == 0

        # The request waits for the pass; the pass (no time passed) starts the replica.
        info, _ = await asyncio.gather(orchestrator.reset(), orchestrator.run_pass())
        assert replica.state is ProcessState.RUNNING
        assert [(p.name, p.pid, p.state) for p in info.processes] == [
            ("replica", 1001, "running"),
            ("ic-gateway", None, "stopped"),
            ("ic-boundary", None, "stopped"),
        ]
        assert node.metric(backoff, process="replica") == 0
        assert node.metric("orchestrator_resets_total") == 1

        # A second reset leaves the running replica alone and has nothing to forget.
        info, _ = await asyncio.gather(orchestrator.reset(), orchestrator.run_pass())
        assert info.processes[0].pid == 1001 and len(node.replica.starts) == 2

        # No pass in time: unavailable, and nothing is reset by a later pass for it.
        with pytest.raises(
            ResetUnavailable, match=r"did not finish a pass with the reset within 0\.01 s"
        ):
            await orchestrator.reset(timeout=0.01)
        await orchestrator.run_pass()
        assert node.metric("orchestrator_resets_total") == 2

        orchestrator.request_stop()
        with pytest.raises(ResetUnavailable, match="stopping"):
            await orchestrator.reset()

    asyncio.run(scenario())
    resets = [e for e in node.journal() if e["event"] == "reset"]
    assert [(e["program"], e["backoffs"]) for e in resets] == [
        ("orchestrator", {"replica": 0.5}),
        ("orchestrator", {}),
    ]
    events = [(e["program"], e["event"]) for e in node.journal()]
    first_reset = events.index(("orchestrator", "reset"))
    assert events[first_reset + 1] == ("replica", "start")  # in the reset's own pass
