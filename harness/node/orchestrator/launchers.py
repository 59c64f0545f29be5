"""How a runner gets its program going: exec'd (`ExecLauncher`, the classic way, a fresh
interpreter per program) or forked by the orchestrator's fork server (`ForkLauncher`, the
default: the server has imported every program, so a start costs a fork). Either way the
program is a process of its own, in a process group of its own within the node's session, with
its log, environment and command line; the runner waits for it and signals its group the same.

The fork server is forked from the orchestrator before the orchestrator starts its event loop
or any thread (`harness.node.forkserver.server.fork_server_here`). When it dies, the programs it
forked lose their supervision: each is stopped (SIGTERM, SIGKILL after the grace period) and
counted as exited on its own, so its manager restarts it, from a new, exec'd server, as after
any crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from harness.node.forkserver.client import AsyncForkClient
from harness.node.forkserver.protocol import Spawn, returncode
from harness.node.orchestrator import pgroup
from harness.node.orchestrator.pgroup import KILL_TIMEOUT
from harness.node.orchestrator.process import LaunchSpec

log = logging.getLogger(__name__)


class Launched(Protocol):
    """A program that was started: its pid, and its end."""

    @property
    def pid(self) -> int: ...

    async def wait(self) -> int:
        """Wait until it ended; its return code (minus the signal that killed it)."""
        ...


class Launcher(Protocol):
    async def launch(self, spec: LaunchSpec, log: Path, log_fd: int) -> Launched:
        """Start `spec` with stdout and stderr to the log (`log_fd` is open on `log`, for
        appending); `OSError` when it cannot be started."""
        ...

    async def close(self) -> None:
        """Let go of what starting programs took (the running ones stay)."""
        ...


class ExecLauncher:
    """Programs exec'd from their console scripts (`--spawn exec`). `subprocess` makes the
    process group (uvloop's own subprocesses cannot: no `process_group`), and the end is
    awaited on a pidfd."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    async def launch(self, spec: LaunchSpec, log: Path, log_fd: int) -> Launched:
        process = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            env={**self.environ, **spec.env},
            process_group=0,
        )
        return _Exec(process)

    async def close(self) -> None:
        return None


class _Exec:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int:
        await wait_for_exit(self.process.pid)
        return self.process.wait()


async def wait_for_exit(pid: int) -> None:
    """Wait until the process `pid` ended (its pidfd becomes readable), without reaping it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


@dataclass(eq=False)
class _Forked:
    pid: int
    ended: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    async def wait(self) -> int:
        return await asyncio.shield(self.ended)


class ForkLauncher:
    """Programs forked by the orchestrator's fork server (`--spawn fork`, the default)."""

    def __init__(
        self,
        server: socket.socket | None,
        title: str,
        stop_grace_period: float,
        server_pid: int | None = None,
    ) -> None:
        self._socket = server  # the first server's, forked before the loop; None: exec one
        self._forked_server = server_pid  # that server, a child of this process to reap
        self.title = title
        self.stop_grace_period = stop_grace_period
        self._client: AsyncForkClient | None = None
        self._running: dict[int, _Forked] = {}
        self._early_exits: dict[int, int] = {}  # exits heard before the spawn's reply was
        self._orphans: set[asyncio.Task[None]] = set()

    async def launch(self, spec: LaunchSpec, log: Path, log_fd: int) -> Launched:
        if not spec.forkable:  # not a Python program of ours: exec'd
            return await ExecLauncher(os.environ).launch(spec, log, log_fd)
        client = await self._server()
        pid = await client.spawn(Spawn(spec.name, spec.argv, spec.env, str(log)))
        child = _Forked(pid)
        self._running[pid] = child
        if pid in self._early_exits:
            self._ended(pid, self._early_exits.pop(pid))
        return child

    async def _server(self) -> AsyncForkClient:
        if self._client is not None and self._client.alive:
            return self._client
        if self._socket is not None:
            client = AsyncForkClient(self._socket, self._exited, self._lost)
            self._socket = None
            await client.start()
        else:
            log.info("starting a new fork server")
            client = await AsyncForkClient.exec_server(self.title, self._exited, self._lost)
        self._client = client
        return client

    def _exited(self, pid: int, status: int) -> None:
        if pid in self._running:
            self._ended(pid, returncode(status))
        else:  # kept as the exit code too, not the raw status (3 << 8 is not "exit code 768")
            self._early_exits[pid] = returncode(status)

    def _ended(self, pid: int, code: int) -> None:
        child = self._running.pop(pid)
        if not child.ended.done():
            child.ended.set_result(code)

    def _lost(self) -> None:
        """The fork server is gone, and with it the news of its children's ends: stop them."""
        self._reap_forked_server()
        if not self._running:
            return
        log.error(
            "the fork server died; stopping the %d program(s) it forked: %s",
            len(self._running),
            ", ".join(str(pid) for pid in self._running),
        )
        for child in list(self._running.values()):
            task = asyncio.get_running_loop().create_task(self._stop_orphan(child))
            self._orphans.add(task)
            task.add_done_callback(self._orphans.discard)

    async def _stop_orphan(self, child: _Forked) -> None:
        code = -signal.SIGTERM
        pgroup.signal_group(child.pid, signal.SIGTERM)
        if not await _gone(child.pid, self.stop_grace_period):
            code = -signal.SIGKILL
            pgroup.signal_group(child.pid, signal.SIGKILL)
            await _gone(child.pid, KILL_TIMEOUT)
        if self._running.get(child.pid) is child:
            self._ended(child.pid, code)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.on_lost = lambda: None  # a hang-up of ours is no loss
            await client.close()
        elif self._socket is not None:
            self._socket.close()
            self._socket = None
        # The first server exits on the hang-up: wait for it, so nothing of the node outlives
        # its orchestrator's end.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_TIMEOUT
        while self._forked_server is not None and not self._reap_forked_server():
            if loop.time() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._forked_server, signal.SIGKILL)
            await asyncio.sleep(pgroup.POLL_INTERVAL)

    def _reap_forked_server(self) -> bool:
        """Reap the first server if it has ended (it is this process's child); True if so."""
        if self._forked_server is None:
            return True
        try:
            pid, _ = os.waitpid(self._forked_server, os.WNOHANG)
        except ChildProcessError:
            pid = self._forked_server
        if pid == 0:
            return False
        self._forked_server = None
        return True


async def _gone(pid: int, timeout: float) -> bool:
    """Wait until the process `pid` is gone (or a zombie); False if it is alive at `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(psutil.Error):
            if pgroup.is_alive(psutil.Process(pid)):
                if loop.time() >= deadline:
                    return False
                await asyncio.sleep(pgroup.POLL_INTERVAL)
                continue
        return True
