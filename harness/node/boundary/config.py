"""ic-boundary's configuration: flags, each also an environment variable, into one frozen value.

Every flag `--some-flag` can also be given as the variable `SOME_FLAG`; the flag wins, and an
empty variable counts as unset. Unknown variables are ignored, because the orchestrator passes
the IC's whole ic-boundary env file (`LISTEN_HTTPS_PORT`, `TLS_CERT_PATH`, ...).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from harness.node.listen import ListenAddress, parse_listen

T = TypeVar("T")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")


class ConfigError(ValueError):
    """A flag or variable with a value ic-boundary cannot use."""


@dataclass(frozen=True)
class StaticUpstream:
    """One replica given with `--upstreams`: the subnet it serves and its base URL."""

    subnet_id: str
    url: str


@dataclass(frozen=True)
class BoundaryConfig:
    tls_hostname: str
    listen_http_addr: ListenAddress
    obs_metrics_addr: ListenAddress
    registry_local_store_path: Path | None
    upstreams: tuple[StaticUpstream, ...]
    registry_poll_interval: float
    health_check_interval: float
    upstream_timeout: float
    graceful_timeout: float
    log_level: str
    crypto_config: str | None = None


def parse_duration(value: str) -> float:
    """`250ms`, `1s`, `1.5s`, `2m` or a bare number of seconds; must be above zero."""
    match = _DURATION.match(value)
    if match is None:
        raise ConfigError(f"{value!r} is not a duration (examples: 250ms, 1s, 1.5s, 2m)")
    seconds = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2) or "s"]
    if seconds <= 0:
        raise ConfigError(f"{value!r}: the duration must be above zero")
    return seconds


def parse_upstreams(value: str) -> tuple[StaticUpstream, ...]:
    """`subnet_id=http://ip:port,...` (a subnet may be named several times, once per replica)."""
    upstreams = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        subnet_id, sep, url = item.partition("=")
        subnet_id, url = subnet_id.strip(), url.strip().rstrip("/")
        if not sep or not subnet_id or not url:
            raise ConfigError(f"{item!r}: expected SUBNET_ID=http://HOST:PORT")
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise ConfigError(f"{item!r}: {url!r} is not an http://HOST:PORT URL")
        if parts.path or parts.query or parts.fragment:
            raise ConfigError(f"{item!r}: {url!r} must not have a path, query or fragment")
        upstreams.append(StaticUpstream(subnet_id, url))
    if not upstreams:
        raise ConfigError(f"{value!r} names no upstream; expected SUBNET_ID=http://HOST:PORT,...")
    return tuple(upstreams)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ic-boundary",
        description="API boundary node: routes IC API requests to healthy replicas. "
        "Every flag is also an environment variable (--tls-hostname = TLS_HOSTNAME).",
    )
    add = parser.add_argument
    add("--tls-hostname", help="the node's domain; requests for other hosts get 400")
    add("--crypto-config", help="accepted for compatibility and ignored (plain HTTP only)")
    add("--listen-http-addr", help="API listen address (default [::]:443, plain HTTP)")
    add("--obs-metrics-addr", help="metrics listen address (default [::]:9324)")
    add("--registry-local-store-path", help="registry store directory to route from")
    add("--upstreams", help="static routing instead of a registry: SUBNET_ID=URL,...")
    add("--registry-poll-interval", help="how often to read the registry (default 1s)")
    add("--health-check-interval", help="how often to probe every replica (default 1s)")
    add("--upstream-timeout", help="timeout of a proxied request (default 10s)")
    add("--graceful-timeout", help="how long SIGTERM waits for requests (default 5s)")
    add("--log-level", help=f"one of {', '.join(LOG_LEVELS)} (default info)")
    return parser


_DEFAULTS = {
    "listen_http_addr": "[::]:443",
    "obs_metrics_addr": "[::]:9324",
    "registry_poll_interval": "1s",
    "health_check_interval": "1s",
    "upstream_timeout": "10s",
    "graceful_timeout": "5s",
    "log_level": "info",
}


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> BoundaryConfig:
    """Build the configuration; bad or missing values end the program with exit code 2."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    # Flag > environment variable > default; an empty variable is unset.
    values: dict[str, str | None] = {}
    for name, flag_value in args.items():
        from_env = env.get(name.upper()) or None
        values[name] = flag_value if flag_value is not None else from_env
        if values[name] is None:
            values[name] = _DEFAULTS.get(name)
    try:
        return _build(values)
    except ConfigError as exc:
        parser.error(str(exc))


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')} ({name.upper()})"


def _build(values: Mapping[str, str | None]) -> BoundaryConfig:
    def required(name: str) -> str:
        value = values[name]
        if value is None or not value.strip():
            raise ConfigError(f"{_flag(name)} is required")
        return value.strip()

    def checked(name: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(required(name))
        except ValueError as exc:
            raise ConfigError(f"{_flag(name)}: {exc}") from None

    registry, upstreams = values["registry_local_store_path"], values["upstreams"]
    if (registry is None) == (upstreams is None):
        raise ConfigError(
            f"give exactly one of {_flag('registry_local_store_path')} or {_flag('upstreams')}"
            + (", not both" if registry is not None else "")
        )
    log_level = required("log_level").lower()
    log_level = "warning" if log_level == "warn" else log_level
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"{_flag('log_level')}: {log_level!r} is not one of {LOG_LEVELS}")
    return BoundaryConfig(
        tls_hostname=required("tls_hostname").lower().rstrip("."),
        listen_http_addr=checked("listen_http_addr", parse_listen),
        obs_metrics_addr=checked("obs_metrics_addr", parse_listen),
        registry_local_store_path=Path(registry) if registry is not None else None,
        upstreams=checked("upstreams", parse_upstreams) if upstreams is not None else (),
        registry_poll_interval=checked("registry_poll_interval", parse_duration),
        health_check_interval=checked("health_check_interval", parse_duration),
        upstream_timeout=checked("upstream_timeout", parse_duration),
        graceful_timeout=checked("graceful_timeout", parse_duration),
        log_level=log_level,
        crypto_config=values["crypto_config"],
    )
