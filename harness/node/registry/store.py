"""A registry store on local disk: one immutable JSON file per version, written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from harness.node.registry.records import RegistryFormatError, RegistrySnapshot

_VERSION_NAME = re.compile(r"^(\d{20})\.json$")


def version_file_name(version: int) -> str:
    return f"{version:020d}.json"


RACY_SECONDS = 1.0
"""A directory changed less than this long ago is listed again even when its stat looks the same:
the kernel's timestamps are coarse, two changes a few ms apart can leave the same one (git's
"racily clean" rule)."""


class LocalStore:
    """The versions of one registry, in a directory (see `harness.node.registry`)."""

    blocking = False
    """Reading it takes a stat or a small file: a poller can do it on its event loop."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._latest: tuple[tuple[int, int, int], int] | None = None  # (dir stat, latest)

    def versions(self) -> list[int]:
        """Every version present, ascending; an absent directory has none."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        found = (_VERSION_NAME.match(name) for name in names)
        return sorted(int(m.group(1)) for m in found if m)

    def latest_version(self) -> int:
        """The highest version present, 0 when there is none. One stat of the directory when
        it has not changed since the last call (an orchestrator polls this ten times a second)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return 0
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._latest is not None and self._latest[0] == signature:
            return self._latest[1]
        versions = self.versions()
        latest = versions[-1] if versions else 0
        if time.time_ns() - stat.st_mtime_ns > RACY_SECONDS * 1e9:
            self._latest = (signature, latest)
        return latest

    def read(self, version: int) -> RegistrySnapshot:
        """Read and validate one version; raise `RegistryFormatError` if it is not valid."""
        return parse_version(self.read_bytes(version), version, str(self.file(version)))

    def file(self, version: int) -> Path:
        return self.path / version_file_name(version)

    def read_bytes(self, version: int) -> bytes:
        """The stored text of one version, unchecked; `RegistryFormatError` if it is absent."""
        file = self.file(version)
        try:
            return file.read_bytes()
        except FileNotFoundError:
            raise RegistryFormatError(f"{file}: no such registry version") from None

    def read_latest(self) -> RegistrySnapshot | None:
        latest = self.latest_version()
        return self.read(latest) if latest else None

    def write(self, snapshot: RegistrySnapshot) -> Path:
        """Add `snapshot` as a new version; it must be exactly one above the latest."""
        snapshot.validate()
        expected = self.latest_version() + 1
        if snapshot.version != expected:
            raise ValueError(
                f"registry {self.path}: next version must be {expected}, got {snapshot.version}"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / version_file_name(snapshot.version)
        payload = json.dumps(snapshot.to_json(), indent=1, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise ValueError(
                    f"registry {self.path}: version {snapshot.version} was written concurrently"
                ) from None
        finally:
            os.unlink(tmp)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final


def parse_version(text: bytes, version: int, where: str) -> RegistrySnapshot:
    """Validate the stored text of registry version `version`, read from `where` (a file or a
    URL, named in errors); raise `RegistryFormatError` if it is not that version, valid."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer too
        # long to convert; nesting deep enough exhausts the parser's recursion.
        raise RegistryFormatError(f"{where}: not valid JSON ({exc!s:.200})") from None
    try:
        snapshot = RegistrySnapshot.from_json(data)
    except RegistryFormatError as exc:
        raise RegistryFormatError(f"{where}: {exc}") from None
    if snapshot.version != version:
        raise RegistryFormatError(
            f"{where}: the name says version {version}, the content says {snapshot.version}"
        )
    return snapshot
