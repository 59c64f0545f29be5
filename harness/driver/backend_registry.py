"""The backends there are: every `harness.backends` entry point (pyproject.toml), loaded when
asked for, so an unused backend costs nothing and a new one needs no change here.

    [project.entry-points."harness.backends"]
    local = "harness.driver.backends.local:LocalBackend"
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

from harness.driver.errors import BackendUnavailable

if TYPE_CHECKING:
    from harness.driver.backends.base import Backend

ENTRY_POINT_GROUP = "harness.backends"


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted(_entry_points())


def get_backend(name: str) -> type[Backend]:
    """The backend class called `name`, imported now."""
    entry_points = _entry_points()
    try:
        entry_point = entry_points[name]
    except KeyError:
        known = ", ".join(sorted(entry_points)) or "none (is the harness installed?)"
        raise BackendUnavailable(f"unknown backend {name!r}; available: {known}") from None
    backend: type[Backend] = entry_point.load()
    return backend


def backends() -> list[type[Backend]]:
    """Every backend class, imported now."""
    return [get_backend(name) for name in backend_names()]
