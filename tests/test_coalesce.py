"""`CoalescingTransport`: the writes of one loop step leave as one, in order, and closing or
aborting does what it says with what is still kept."""

from __future__ import annotations

import asyncio

import pytest

from harness.node.coalesce import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    """Records what reaches the real transport."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data: object) -> None:
        self.calls.append(("writelines", b"".join(list_of_data)))  # type: ignore[arg-type]

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.mark.asyncio
async def test_writes_of_one_step_go_out_as_one_write_after_it() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"")  # nothing to send: no write of its own
    transport.write(b"ok")
    assert real.calls == []
    assert transport.get_write_buffer_size() == len(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    )
    await asyncio.sleep(0)
    assert real.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    # A later step's write is a write of its own.
    transport.write(b"next")
    await asyncio.sleep(0)
    assert real.calls[1:] == [("write", b"next")]


@pytest.mark.asyncio
async def test_close_sends_what_is_kept_first_abort_drops_it() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    assert real.calls == [("write", b"last words"), ("close", b"")]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert len(real.calls) == 2

    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert real.calls == [("abort", b"")]


@pytest.mark.asyncio
async def test_nothing_is_written_to_a_closing_transport() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"too late")
    real.closing = True  # the peer went away before the flush
    await asyncio.sleep(0)
    assert real.calls == []
