"""Reading a log file of a node program: all of it, or (`follow`) all of it and then what is
appended, as `tail -f` does, until the file's directory goes away with its testnet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

FOLLOW_INTERVAL = 0.2
CHUNK = 64 * 1024


def read_file(path: Path, follow: bool = False) -> Iterator[bytes]:
    """The file's bytes in chunks; with `follow`, then every append, until the directory the
    file is in is removed (its testnet went). A file that is truncated is read again from its
    start."""
    with path.open("rb") as stream:
        while True:
            chunk = stream.read(CHUNK)
            if chunk:
                yield chunk
                continue
            if not follow or not path.parent.is_dir():
                return
            try:
                if path.stat().st_size < stream.tell():
                    stream.seek(0)
            except FileNotFoundError:
                return
            time.sleep(FOLLOW_INTERVAL)
