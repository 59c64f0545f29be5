"""A registry store on local disk: one immutable JSON file per version, written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from harness.node.registry.records import RegistryFormatError, RegistrySnapshot

_VERSION_NAME = re.compile(r"^(\d{20})\.json$")


def version_file_name(version: int) -> str:
    return f"{version:020d}.json"


class LocalStore:
    """The versions of one registry, in a directory (see `harness.node.registry`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def versions(self) -> list[int]:
        """Every version present, ascending; an absent directory has none."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        found = (_VERSION_NAME.match(name) for name in names)
        return sorted(int(m.group(1)) for m in found if m)

    def latest_version(self) -> int:
        """The highest version present, 0 when there is none."""
        versions = self.versions()
        return versions[-1] if versions else 0

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
