"""A stand-in HTTP/1.1 server speaking raw TCP in a thread, for the answers no real server gives:
hanging up unanswered, an answer cut short or garbage, silence. The gateway's and the registry
source's tests of broken upstreams use it."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Final


class _Reset:
    def __repr__(self) -> str:
        return "RESET"


HANG_UP: Final = b""
"""An answer: close the connection without a word."""
SILENCE: Final = None
"""An answer: say nothing for `RawServer.silence` seconds (past the client's timeout), then
close the connection."""
RESET: Final = _Reset()
"""An answer: reset the connection (RST, not FIN)."""

Answer = bytes | None | _Reset


class RawServer:
    """On `host:port` (port 0: a free one; `port` and `url` say which), in a thread: every
    request it reads (its head, and the body its Content-Length announces; kept in `requests`)
    is answered with the next of `answers` (bytes, sent as they are; `HANG_UP`; `SILENCE`;
    `RESET`), and the connection is closed after each answer unless `keep_alive`. It accepts no
    connection once the answers have run out. Counts the `connections` it took."""

    def __init__(
        self,
        answers: list[Answer],
        host: str = "127.0.0.1",
        port: int = 0,
        keep_alive: bool = False,
        silence: float = 1.0,
    ) -> None:
        self.answers = answers
        self.keep_alive = keep_alive
        self.silence = silence
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server((host, port))
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    request = self._read_request(conn)
                    if request is None:
                        break
                    self.requests.append(request)
                    answer = self.answers.pop(0)
                    if answer is SILENCE:
                        time.sleep(self.silence)
                        break
                    if isinstance(answer, _Reset):
                        linger = struct.pack("ii", 1, 0)  # close() then sends RST
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        break
                    conn.sendall(answer)
                    if answer == HANG_UP or not self.keep_alive:
                        break

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        """Read one request; None when the client closed the connection instead."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread in accept()
        self.listener.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
