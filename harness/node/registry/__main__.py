"""The registry service: `registry-service --store DIR [--listen HOST:PORT]`, or
`python -m harness.node.registry ...`. Serves a registry store over HTTP to nodes that share
no folder with it (see `harness.node.registry.http`) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.node.layout import REGISTRY_SERVICE_PORT
from harness.node.listen import ListenAddress, parse_listen
from harness.node.registry.http import registry_http_app
from harness.node.registry.store import LocalStore
from harness.node.serve import EXIT_BIND, BindError, Servers, run_program, setup_logging

log = logging.getLogger("harness.node.registry")

DEFAULT_LISTEN = f"0.0.0.0:{REGISTRY_SERVICE_PORT}"


def _listen(value: str) -> ListenAddress:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _store(value: str) -> Path:
    path = Path(value).absolute()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"registry store {value!r} is not a directory")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="registry-service", description="Serve a registry store's versions over HTTP."
    )
    parser.add_argument("--store", required=True, type=_store, help="registry store directory")
    parser.add_argument("--listen", type=_listen, default=DEFAULT_LISTEN)
    parser.add_argument("--log-level", type=str.upper, default="INFO")
    args = parser.parse_args(argv)
    setup_logging("registry-service", args.log_level)
    servers = Servers()
    try:
        servers.add("registry", registry_http_app(LocalStore(args.store)), args.listen)
    except BindError as exc:
        print(f"registry-service: error: {exc.strerror}", file=sys.stderr)
        return EXIT_BIND
    log.info("serving registry %s on %s", args.store, servers.bound("registry"))
    run_program(servers.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
