"""Run one program's HTTP servers (API, metrics, ...) in one event loop, with graceful stop.

Sockets are bound up front, so a port that is taken fails the start with a message that names
it, before anything serves. SIGTERM and SIGINT make every server stop accepting, let in-flight
requests finish for at most `graceful_timeout` seconds, and return; the program then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator, MutableMapping
from typing import Any, Literal

import uvicorn

from harness.node.listen import ListenAddress

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)

EXIT_BIND = 1
"""A program's exit code when a listen address cannot be bound."""


class BindError(OSError):
    """A listen address could not be bound."""


STOP_POLL = 0.01
"""How often a stopping server looks whether its connections and tasks are done, in seconds."""


TICK = 1.0
"""How often a server refreshes its Date header (and looks at uvicorn's exit flag), in seconds."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `Servers` and stops without uvicorn's
    fixed waits: it wakes on `Servers.stop()` itself instead of on its next 0.1 s tick, and
    drains by polling every `STOP_POLL` instead of sleeping 0.1 s, then polling every 0.1 s.
    A program's stop goes from ~120 ms to ~20 ms (bench/probes.py), which every registry
    change that stops a process and every testnet teardown waits for."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn ticks every 0.1 s and does its work every tenth tick (the Date header); the
        # other ticks only look for a stop, which wakes this loop itself. So: one tick a second,
        # each a tenth one. Ten wakeups a second per server were most of an idle node's CPU.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self._stopping.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or ():
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close, busy ones finish first
        loop = asyncio.get_running_loop()
        grace = self.config.timeout_graceful_shutdown
        deadline = loop.time() + (grace if grace is not None else float("inf"))
        state = self.server_state
        while (state.connections or state.tasks) and not self.force_exit:
            if loop.time() >= deadline:
                log.error(
                    "cancelling %d request(s) still running after the %s s graceful timeout",
                    len(state.tasks),
                    grace,
                )
                for task in state.tasks:
                    task.cancel(msg="graceful shutdown timeout exceeded")
                break
            await asyncio.sleep(STOP_POLL)
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()  # a no-op with lifespan="off", as every program has


def bind(address: ListenAddress, name: str) -> socket.socket:
    """Bind and listen on `address`; raise `BindError` naming the server and the address."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        sock = socket.create_server(
            (address.host, address.port), family=family, backlog=1024, reuse_port=False
        )
    except OSError as exc:
        raise BindError(exc.errno, f"{name}: cannot listen on {address}: {exc.strerror}") from exc
    sock.set_inheritable(False)
    return sock


class Servers:
    """The HTTP servers of one program; `run()` serves them until a stop signal."""

    def __init__(self, graceful_timeout: int = 5) -> None:
        self.graceful_timeout = graceful_timeout
        self._servers: list[tuple[str, _Server, socket.socket]] = []
        self.stopping = asyncio.Event()

    def add(
        self,
        name: str,
        app: ASGIApp,
        address: ListenAddress,
        *,
        http: type[asyncio.Protocol] | Literal["httptools"] = "httptools",
    ) -> None:
        """Bind `address` now and serve `app` on it once `run()` is called. `http` may name a
        subclass of uvicorn's httptools protocol for a program that needs one."""
        sock = bind(address, name)
        config = uvicorn.Config(
            app,
            lifespan="off",
            http=http,
            access_log=False,
            log_config=None,
            server_header=False,
            # Never trust a client's X-Forwarded-For, not even from loopback.
            proxy_headers=False,
            timeout_graceful_shutdown=max(1, round(self.graceful_timeout)),
        )
        self._servers.append((name, _Server(config, self.stopping), sock))

    def bound(self, name: str) -> ListenAddress:
        """The address a server really listens on (useful with port 0)."""
        for server_name, _, sock in self._servers:
            if server_name == name:
                host, port = sock.getsockname()[:2]
                return ListenAddress(host, port)
        raise KeyError(name)

    def stop(self) -> None:
        """Ask every server to stop accepting and drain."""
        self.stopping.set()
        for _, server, _ in self._servers:
            server.should_exit = True

    async def run(self, handle_signals: bool = True) -> None:
        """Serve until `stop()` (or SIGTERM/SIGINT when `handle_signals`), drain, return."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await asyncio.gather(
                *(server.serve(sockets=[sock]) for _, server, sock in self._servers)
            )
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            for _, _, sock in self._servers:
                sock.close()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s: stopping, draining in-flight requests", sig.name)
        self.stop()


def run_program(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a program's async main on uvloop, with what it imported and built so far out of the
    garbage collector's way (`gc.freeze`): a full collection no longer walks the tens of
    thousands of objects of the imported modules, which showed as 5-6 ms pauses in ic-gateway's
    p99 latency (bench/RESULTS.md). A forked program's template froze its own already."""
    import uvloop

    gc.freeze()
    uvloop.run(main())


def setup_logging(program: str, level: str = "INFO") -> None:
    """Log to stderr with the program name (the orchestrator captures stderr to a file). The
    programs' HTTP clients, `harness.node.upstream_pool` and http.client, log nothing per
    request, so none needs quieting."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {program} %(levelname)s %(name)s: %(message)s",
    )


def serve_program(
    program: str,
    log_level: str,
    main: Callable[[], Coroutine[Any, Any, None]],
    log: logging.Logger,
) -> None:
    """The common end of `main()` of ic-gateway and ic-boundary: log to stderr as `program`
    at `log_level` (`setup_logging`), run `main` on uvloop, and exit with `EXIT_BIND` (the
    reason logged to `log`) when a listen address is taken."""
    setup_logging(program, log_level)
    try:
        run_program(main)
    except BindError as exc:
        log.error("%s", exc.strerror)
        sys.exit(EXIT_BIND)
