"""The programs by name, and running one in this interpreter: what a fork server's child
does instead of exec'ing the program's console script (`harness.node.forkserver`).

`PROGRAMS` is every node program's entry point (their descriptions', `harness.node.catalog`)
and the registry service's; they are the console scripts of pyproject.toml (a test holds the
two together). `import_all()` imports them, so that a template that forks them has paid every
import once.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from harness.node import catalog

PROGRAMS: dict[str, str] = {
    **{p.name: p.entry for p in catalog.PROGRAMS if p.entry is not None},
    "registry-service": "harness.node.registry.__main__:main",  # the swarm backend's registry
}

RUNTIME_MODULES = (
    "uvloop",
    "uvicorn.lifespan.off",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.protocols.http.httptools_impl",
    "concurrent.futures.thread",
)
"""Modules the programs import only once they run (uvicorn's loop, lifespan, websockets
choice and HTTP protocol for those it serves, asyncio's thread pool): imported by the template
too, or every forked program pays them again in its own pages. Their HTTP clients
(`harness.node.upstream_pool`, http.client) import nothing more on first use.
`tests/test_forkserver.py` forks each program and checks that it imports nothing more."""

Main = Callable[[Sequence[str] | None], Any]


def entry_point(name: str) -> Main:
    """The `main(argv)` of the program called `name`."""
    try:
        target = PROGRAMS[name]
    except KeyError:
        raise ValueError(f"no node program {name!r}; programs: {sorted(PROGRAMS)}") from None
    module, _, function = target.partition(":")
    main: Main = getattr(importlib.import_module(module), function)
    return main


def import_all() -> None:
    """Import every program's module and what they import once running (a template's
    preparation)."""
    for name in PROGRAMS:
        entry_point(name)
    for module in RUNTIME_MODULES:
        importlib.import_module(module)


def run(name: str, argv: Sequence[str]) -> int:
    """Run the program as its console script would, `argv[0]` being its path: return the exit
    status its `main` returned or exited with (1 for an exception, after its traceback)."""
    sys.argv = list(argv)
    try:
        result = entry_point(name)(list(argv[1:]))
    except SystemExit as exit_:
        result = exit_.code
    except BaseException:
        traceback.print_exc()
        result = 1
    finally:
        logging.shutdown()  # flush what the program logged: the caller exits with os._exit
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    if result is None:
        return 0
    if isinstance(result, int):
        return result
    print(result, file=sys.stderr)  # sys.exit("message"), as Python itself does
    return 1
