"""The fork server's loop, and what a forked child does before it becomes its program.

A server is single-threaded and runs no event loop: forking a process with threads or a loop
is unsafe (a lock another thread held stays locked in the child; an inherited epoll is shared).
It is either forked from a process that has not started any yet (`fork_server_here`, the
orchestrator at its start) or exec'd fresh (`python -m harness.node.forkserver --fd N`, a
template for many orchestrators, or an orchestrator's replacement server). Either way it has
imported every node program first and frozen those objects for the garbage collector
(`gc.freeze`), so its children share its pages instead of dirtying them.

It reaps its children (SIGCHLD through a wakeup pipe, never a handler doing work) and tells its
client how each ended. When its client hangs up it exits, leaving its children be: a program
outlives its supervisor's end as an exec'd one would, and the next supervisor deals with it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
from typing import Any, NoReturn

from harness.node import programs
from harness.node.forkserver.protocol import Spawn, decode, encode

log = logging.getLogger(__name__)

TITLE_ROOM = 1024
"""Bytes of command line an exec'd server keeps for its children's titles (`ps` shows each
program's own command line, written over the server's: setproctitle with SPT_NOENV, so that the
environment the harness tags its processes with stays readable in /proc)."""


def set_title(title: str, name: str) -> None:
    """What `ps` shows for this process: `title` as its command line, `name` as its name."""
    import setproctitle

    setproctitle.setproctitle(title)
    setproctitle.setthreadtitle(name[:15])


class ForkServer:
    """Serves one client on `sock` until it hangs up."""

    def __init__(self, sock: socket.socket, title: str) -> None:
        self.sock = sock
        self.title = title
        self.children: set[int] = set()
        self._buffer = b""

    def serve(self) -> None:
        set_title(self.title, "forkserver")
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only wakes the select
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client decides; a terminal's ^C not
        signal.set_wakeup_fd(wake_write)
        try:
            while True:
                ready, _, _ = select.select([self.sock.fileno(), wake_read], [], [])
                if wake_read in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_read, 4096):
                            pass
                    self._reap()
                if self.sock.fileno() in ready and not self._receive():
                    return  # the client hung up
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_read)
            os.close(wake_write)

    def _receive(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._handle(decode(line))
        return True

    def _handle(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        try:
            request = Spawn.from_message(message)
            pid = self._fork(request)
        except Exception as exc:  # the request was bad, or fork failed: say so, go on
            self._send({"id": request_id, "error": f"{type(exc).__name__}: {exc}"})
        else:
            self._send({"id": request_id, "pid": pid})

    def _fork(self, request: Spawn) -> int:
        programs.entry_point(request.name)  # an unknown program is refused here, not in a child
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child writes the server's buffered output again
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _become(request, self.sock)
            finally:
                os._exit(code)
        self.children.add(pid)
        return pid

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self._send({"exit": pid, "status": status})

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # a client that is gone hears nothing
            self.sock.sendall(encode(message))


def _become(request: Spawn, server_socket: socket.socket) -> int:
    """In the forked child: shed the server (its signals, socket and descriptors), take the
    program's process group or session, log, environment and title, and run it."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    if request.new_session:
        os.setsid()
    else:
        os.setpgid(0, 0)
    server_socket.detach()  # its number may soon be the program's: never close it at GC
    _close_descriptors()
    devnull = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(request.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)
    os.environ.update(request.env)
    set_title(" ".join(request.argv), request.name)
    logging.root.handlers.clear()  # the program configures its own logging
    logging.root.setLevel(logging.WARNING)
    return programs.run(request.name, request.argv)


def _close_descriptors() -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def prepare() -> None:
    """Import every node program and freeze what exists for the garbage collector."""
    programs.import_all()
    # setproctitle reads this when first used: never move the environment for a longer title
    # (the harness finds its processes by their environment's tags in /proc).
    os.environ.setdefault("SPT_NOENV", "1")
    import setproctitle  # noqa: F401  (imported now, once: children only call it)

    gc.collect()
    gc.freeze()


def fork_server_here(title: str) -> tuple[socket.socket, int]:
    """Fork a fork server from this process, which must have no thread or event loop yet;
    return the client's end of its socket and its pid."""
    prepare()
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            client.close()  # the client's end is the parent's: a copy here would hide its hang-up
            ForkServer(server, title).serve()
        except BaseException:
            logging.exception("the fork server failed")
            code = 1
        finally:
            os._exit(code)
    server.close()
    return client, pid


def main(argv: list[str] | None = None) -> NoReturn:
    """`python -m harness.node.forkserver --fd N [--title TEXT] [--title-room ...]`: serve the
    client on the inherited socket N."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "--fd" or not args[1].isdigit():
        print("usage: python -m harness.node.forkserver --fd N [--title TEXT]", file=sys.stderr)
        sys.exit(2)
    title = args[args.index("--title") + 1] if "--title" in args else "harness forkserver"
    sock = socket.socket(fileno=int(args[1]))
    prepare()
    ForkServer(sock, title).serve()
    sys.exit(0)
