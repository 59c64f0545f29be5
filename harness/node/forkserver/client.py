"""Clients of a fork server: `ForkClient` blocks (a reader thread takes the server's messages),
`AsyncForkClient` runs on an asyncio loop. Both ask for a child with `spawn()` and hear of each
child's end through `on_exit(pid, waitpid status)`; when the server goes away, `on_lost()` is
called once and every spawn still waiting fails with `ConnectionError`. `exec_server` starts a
fresh server (a new interpreter) for them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from harness.node.forkserver.protocol import Spawn, decode
from harness.node.forkserver.server import TITLE_ROOM

OnExit = Callable[[int, int], None]
OnLost = Callable[[], None]


def server_argv(fd: int, title: str) -> list[str]:
    """The command line of an exec'd server serving the socket `fd`, with room for titles."""
    return [
        sys.executable, "-m", "harness.node.forkserver", "--fd", str(fd), "--title", title,
        "--title-room", "." * TITLE_ROOM,
    ]  # fmt: skip


def _pid(message: Mapping[str, Any]) -> int:
    if "error" in message:
        raise OSError(f"the fork server could not fork: {message['error']}")
    return int(message["pid"])


class ForkClient:
    """A blocking client; thread-safe."""

    def __init__(
        self,
        sock: socket.socket,
        process: subprocess.Popen[bytes] | None = None,
        on_exit: OnExit | None = None,
        on_lost: OnLost | None = None,
    ) -> None:
        self.sock = sock
        self.process = process  # the server, when this client started it
        self.on_exit = on_exit
        self.on_lost = on_lost
        self._ids = itertools.count()
        self._pending: dict[int, Future[int]] = {}
        self._lock = threading.Lock()
        self._alive = True
        self._reader = threading.Thread(target=self._read, name="forkserver-client", daemon=True)
        self._reader.start()

    @classmethod
    def exec_server(
        cls,
        title: str,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        on_exit: OnExit | None = None,
        on_lost: OnLost | None = None,
    ) -> ForkClient:
        """A new exec'd server (in a session of its own, its output appended to `log`) and its
        client."""
        client_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with open(log or os.devnull, "ab") as output:
                process = subprocess.Popen(
                    server_argv(server_end.fileno(), title),
                    pass_fds=(server_end.fileno(),),
                    env=None if env is None else dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        finally:
            server_end.close()
        return cls(client_end, process, on_exit, on_lost)

    @property
    def alive(self) -> bool:
        return self._alive

    def spawn(self, request: Spawn, timeout: float = 30.0) -> int:
        """Fork `request`'s program; its pid. `OSError` when it could not be forked,
        `ConnectionError` when the server is gone."""
        future: Future[int] = Future()
        with self._lock:
            if not self._alive:
                raise ConnectionError("the fork server is gone")
            request_id = next(self._ids)
            self._pending[request_id] = future
            try:
                self.sock.sendall(request.message(request_id))
            except OSError as exc:
                self._pending.pop(request_id, None)
                raise ConnectionError(f"the fork server is gone: {exc}") from exc
        return future.result(timeout)

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._dispatch(decode(line))
        except OSError:
            pass
        finally:
            self._lost()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            if self.on_exit is not None:
                self.on_exit(int(message["exit"]), int(message["status"]))
            return
        with self._lock:
            future = self._pending.pop(int(message["id"]), None)
        if future is not None:
            try:
                future.set_result(_pid(message))
            except OSError as exc:
                future.set_exception(exc)

    def _lost(self) -> None:
        if self.process is not None:
            self.process.poll()  # reap it, if it has ended
        with self._lock:
            self._alive = False
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            future.set_exception(ConnectionError("the fork server is gone"))
        if self.on_lost is not None:
            self.on_lost()

    def close(self, timeout: float = 5.0) -> None:
        """Hang up: the server exits (its children stay); wait for it if this client started
        it."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class AsyncForkClient:
    """A client on the running asyncio loop; `start()` it first."""

    def __init__(
        self,
        sock: socket.socket,
        on_exit: OnExit,
        on_lost: OnLost,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.sock = sock
        self.on_exit = on_exit
        self.on_lost = on_lost
        self.process = process
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._alive = True

    @classmethod
    async def exec_server(cls, title: str, on_exit: OnExit, on_lost: OnLost) -> AsyncForkClient:
        """A new exec'd server (in the caller's session, in a process group of its own) and
        its client, started."""
        client_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                server_argv(server_end.fileno(), title),
                pass_fds=(server_end.fileno(),),
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        finally:
            server_end.close()
        client = cls(client_end, on_exit, on_lost, process)
        await client.start()
        return client

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def server_pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self.sock)
        self._task = asyncio.get_running_loop().create_task(self._read(reader), name="forkserver")

    async def spawn(self, request: Spawn, timeout: float = 30.0) -> int:
        if not self._alive or self._writer is None:
            raise ConnectionError("the fork server is gone")
        request_id = next(self._ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                self._writer.write(request.message(request_id))
                await self._writer.drain()
            except OSError as exc:
                raise ConnectionError(f"the fork server is gone: {exc}") from exc
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                message = decode(line)
                if "exit" in message:
                    self.on_exit(int(message["exit"]), int(message["status"]))
                    continue
                future = self._pending.pop(int(message["id"]), None)
                if future is not None and not future.done():
                    try:
                        future.set_result(_pid(message))
                    except OSError as exc:
                        future.set_exception(exc)
        except (OSError, ValueError):
            pass
        finally:
            self._alive = False
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the fork server is gone"))
            self._pending.clear()
            self.on_lost()

    async def close(self) -> None:
        """Hang up (the server exits; its children stay)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.process is not None:
            process = self.process
            try:  # it exits on the hang-up; reap it without blocking the loop
                await asyncio.wait_for(asyncio.to_thread(process.wait), 5.0)
            except TimeoutError:
                process.kill()
                await asyncio.to_thread(process.wait)
