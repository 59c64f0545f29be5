"""The orchestrator's command line, parsed into one frozen `OrchestratorConfig`.

Every flag is checked here, so a bad flag (or an unreadable env file) exits 2 with a message
naming it, before anything starts.
"""

from __future__ import annotations

import argparse
import math
import os
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from harness.node.catalog import IC_GATEWAY_DOMAIN, supervised
from harness.node.layout import REGISTRY_SERVICE_PORT, DataDir, Port
from harness.node.listen import ListenAddress, parse_listen
from harness.node.orchestrator.envfile import EnvFileError, read_env_file

DEFAULT_METRICS_LISTEN = ListenAddress("0.0.0.0", Port.ORCHESTRATOR_METRICS)
DEFAULT_DASHBOARD_LISTEN = ListenAddress("0.0.0.0", Port.DASHBOARD)
DEFAULT_CHECK_INTERVAL = 10.0  # the IC's CHECK_INTERVAL_SECS
DEFAULT_REGISTRY_POLL_INTERVAL = 0.2
DEFAULT_STOP_GRACE_PERIOD = 10.0
PROCESS_NAMES = tuple(program.name for program in supervised())
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


SPAWN_MODES = ("fork", "exec")


@dataclass(frozen=True)
class OrchestratorConfig:
    """Everything node-local the orchestrator is told at start; the rest comes from the
    registry."""

    node_id: str
    registry_local_store: Path | None  # or `registry_url`: exactly one is set
    data_dir: Path
    ic_binary_directory: Path
    registry_url: str | None = None
    metrics_listen_addr: ListenAddress = DEFAULT_METRICS_LISTEN
    dashboard_listen_addr: ListenAddress = DEFAULT_DASHBOARD_LISTEN
    enable_ic_gateway: bool = False
    check_interval: float = DEFAULT_CHECK_INTERVAL
    registry_poll_interval: float = DEFAULT_REGISTRY_POLL_INTERVAL
    stop_grace_period: float = DEFAULT_STOP_GRACE_PERIOD
    version: str = "0.0.0"
    root_key_file: Path | None = None
    ic_gateway_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ic_boundary_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ic_gateway_port: int = Port.IC_GATEWAY
    ic_gateway_domain: str = IC_GATEWAY_DOMAIN
    log_level: str = "INFO"
    spawn: str = "fork"  # SPAWN_MODES: how programs start (see `launchers`)
    program_binaries: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    """Programs run from another executable (`--program-binary NAME=PATH`), always exec'd."""

    @property
    def layout(self) -> DataDir:
        """What lives where in `data_dir`: the programs' logs and pid files, the fault knobs."""
        return DataDir(self.data_dir)

    @property
    def logs_dir(self) -> Path:
        """Where each program's stdout+stderr is appended (`DataDir.logs`)."""
        return self.layout.logs

    @property
    def run_dir(self) -> Path:
        """Where the pid files of running programs live (`DataDir.run`)."""
        return self.layout.run


def default_binary_directory() -> Path:
    """The directory holding the installed console scripts (replica, ic-gateway, ...)."""
    return Path(sysconfig.get_path("scripts"))


def _non_empty(what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        return value.strip()

    return parse


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number of seconds")
    return seconds


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return int(value)


def _listen(value: str) -> ListenAddress:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _http_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.strip("/"):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def _directory(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return path.absolute()


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a file")
    return path.absolute()


def _program_binary(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=PATH")
    if name not in PROCESS_NAMES:
        raise argparse.ArgumentTypeError(
            f"{name!r} is no program the orchestrator runs; programs: {', '.join(PROCESS_NAMES)}"
        )
    executable = _existing_file(path)
    if not os.access(executable, os.X_OK):
        raise argparse.ArgumentTypeError(f"{path!r} is not executable")
    return name, executable


def _env_file(value: str) -> Mapping[str, str]:
    try:
        return MappingProxyType(read_env_file(Path(value)))
    except EnvFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description=(
            "Supervise a node's programs: run the replica while the registry assigns the node "
            "to a subnet (ic-gateway beside it on cloud engines when the launch gate is on) "
            "and ic-boundary while the node is an API boundary node."
        ),
    )
    parser.add_argument("--node-id", required=True, type=_non_empty("--node-id"))
    registry = parser.add_mutually_exclusive_group(required=True)
    registry.add_argument(
        "--registry-local-store",
        type=lambda v: Path(v).absolute(),
        help="registry store directory (one JSON file per version)",
    )
    registry.add_argument(
        "--registry-url",
        type=_http_url,
        help=f"registry service to poll instead, e.g. http://registry:{REGISTRY_SERVICE_PORT} "
        "(a node that shares no folder with the registry)",
    )
    parser.add_argument(
        "--data-dir",
        required=True,
        type=lambda v: Path(v).absolute(),
        help="node-local state: logs/<NAME>.log, run/<NAME>.pid, replica-faults.json",
    )
    parser.add_argument(
        "--ic-binary-directory",
        type=_directory,
        default=None,
        help="where the replica, ic-gateway and ic-boundary binaries are "
        "(default: the directory of the installed console scripts)",
    )
    # Defaults that are not strings skip `type`: they are ListenAddresses already.
    parser.add_argument("--metrics-listen-addr", type=_listen, default=DEFAULT_METRICS_LISTEN)
    parser.add_argument("--dashboard-listen-addr", type=_listen, default=DEFAULT_DASHBOARD_LISTEN)
    parser.add_argument(
        "--enable-ic-gateway",
        action="store_true",
        help="launch gate for the ic-gateway side-car on cloud-engine subnets (also on when "
        "the node's registry record has the feature 'ic_gateway')",
    )
    parser.add_argument("--check-interval", type=_positive_seconds, default=DEFAULT_CHECK_INTERVAL)
    parser.add_argument(
        "--registry-poll-interval",
        type=_positive_seconds,
        default=DEFAULT_REGISTRY_POLL_INTERVAL,
    )
    parser.add_argument(
        "--stop-grace-period",
        type=_positive_seconds,
        default=DEFAULT_STOP_GRACE_PERIOD,
        help="seconds between SIGTERM and SIGKILL of a program's process group",
    )
    parser.add_argument("--version", type=_non_empty("--version"), default="0.0.0")
    parser.add_argument("--root-key-file", type=_existing_file, default=None)
    parser.add_argument("--ic-gateway-env-file", type=_env_file, default=None)
    parser.add_argument("--ic-boundary-env-file", type=_env_file, default=None)
    parser.add_argument("--ic-gateway-port", type=_port, default=Port.IC_GATEWAY)
    parser.add_argument(
        "--ic-gateway-domain",
        type=_non_empty("--ic-gateway-domain"),
        default=IC_GATEWAY_DOMAIN,
    )
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO", metavar="LEVEL"
    )
    parser.add_argument(
        "--program-binary",
        type=_program_binary,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="run the program NAME (replica, ic-gateway, ...) from the executable PATH instead "
        "of the harness's, exec'd with the arguments and environment it gets (repeatable)",
    )
    parser.add_argument(
        "--spawn",
        choices=SPAWN_MODES,
        default="fork",
        help="start programs forked by the node's fork server (fork, the default: the server "
        "has imported them) or exec'd from their console scripts (exec)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> OrchestratorConfig:
    """Parse the command line; on a bad flag print the problem and exit 2."""
    ns = build_parser().parse_args(argv)
    empty: Mapping[str, str] = MappingProxyType({})
    return OrchestratorConfig(
        node_id=ns.node_id,
        registry_local_store=ns.registry_local_store,
        registry_url=ns.registry_url,
        data_dir=ns.data_dir,
        ic_binary_directory=ns.ic_binary_directory or default_binary_directory(),
        metrics_listen_addr=ns.metrics_listen_addr,
        dashboard_listen_addr=ns.dashboard_listen_addr,
        enable_ic_gateway=ns.enable_ic_gateway,
        check_interval=ns.check_interval,
        registry_poll_interval=ns.registry_poll_interval,
        stop_grace_period=ns.stop_grace_period,
        version=ns.version,
        root_key_file=ns.root_key_file,
        ic_gateway_env=ns.ic_gateway_env_file or empty,
        ic_boundary_env=ns.ic_boundary_env_file or empty,
        ic_gateway_port=ns.ic_gateway_port,
        ic_gateway_domain=ns.ic_gateway_domain,
        log_level=ns.log_level,
        spawn=ns.spawn,
        program_binaries=MappingProxyType(dict(ns.program_binary)),
    )
