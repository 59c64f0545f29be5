"""ic-gateway's configuration: flags, each also an environment variable, into one frozen value.

Like the real ic-gateway (`#[clap(env, long)]`), every flag `--some-flag` can be given as the
variable `SOME_FLAG`; the flag wins, and an empty variable counts as unset. Unknown variables
are ignored, because the orchestrator passes the real gateway's whole env file (`LOG_STDOUT`,
`CERT_PROVIDER_DIR`, ...). A bad value ends the program with exit code 2 and a message that
names the variable or flag it came from.

Values: durations as `25ms`, `1s`, `1.5s`, `2m`, `1h` (a bare number is seconds); sizes as
`10MB` (10,000,000 bytes), `512KiB`, `3MiB` (binary units), a bare number is bytes.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from harness.node.listen import ListenAddress, parse_listen

T = TypeVar("T")

LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical")
_LOG_LEVEL_NAMES = {"trace": "debug", "warn": "warning"}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b|b)?$")
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class ConfigError(ValueError):
    """A value ic-gateway cannot use; the message says why (the caller adds where it came from)."""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything ic-gateway needs to run; built only by `load_config`."""

    listen_plain: ListenAddress
    ic_urls: tuple[str, ...]
    domains: frozenset[str]
    metrics_listen: ListenAddress | None
    ic_request_retries: int
    ic_request_retry_interval: float
    ic_request_max_size: int
    ic_response_timeout: float
    graceful_timeout: float
    log_level: str
    network_http_client_count: int


def parse_duration(value: str) -> float:
    """`25ms`, `1s`, `1.5s`, `2m`, `1h` or a bare number of seconds, in seconds; above zero."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        raise ConfigError(f"{value!r} is not a duration (examples: 25ms, 1s, 1.5s, 2m)")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ConfigError(f"{value!r}: the duration must be above zero")
    return seconds


def parse_size(value: str) -> int:
    """`10MB`, `512KiB`, `3MiB` or a bare number of bytes, in bytes; above zero."""
    match = _SIZE.match(value.strip().lower())
    if match is None:
        raise ConfigError(f"{value!r} is not a size (examples: 10MB, 512KiB, 1048576)")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2) or "b"]
    if size <= 0:
        raise ConfigError(f"{value!r}: the size must be above zero")
    return size


def parse_count(value: str) -> int:
    """A whole number >= 0."""
    text = value.strip()
    if not text.isdigit():
        raise ConfigError(f"{value!r} is not a whole number >= 0")
    return int(text)


def parse_positive(value: str) -> int:
    """A whole number >= 1."""
    count = parse_count(value)
    if count < 1:
        raise ConfigError(f"{value!r}: must be at least 1")
    return count


def parse_ic_urls(value: str) -> tuple[str, ...]:
    """`http://HOST:PORT[/prefix]`, comma-separated; returned without a trailing slash."""
    urls = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        try:
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError as exc:
            raise ConfigError(f"{item!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{item!r} is not an http(s)://HOST[:PORT] URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"{item!r} must not have credentials, a query or a fragment")
        urls.append(item.rstrip("/"))
    if not urls:
        raise ConfigError(f"{value!r} names no URL; expected http://HOST:PORT[,...]")
    return tuple(urls)


def normalize_host(value: str) -> str:
    """A host name as it is compared: lowercase, no trailing dot, IPv6 without brackets."""
    host = value.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def parse_domains(value: str) -> frozenset[str]:
    """Comma-separated FQDNs (or IP literals) the gateway serves."""
    domains = set()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host = normalize_host(item)
        if not _is_host(host):
            raise ConfigError(f"{item!r} is not a domain name (expected e.g. ic0.example)")
        domains.add(host)
    if not domains:
        raise ConfigError(f"{value!r} names no domain; expected e.g. ic0.example[,...]")
    return frozenset(domains)


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return 0 < len(host) <= 253 and all(_LABEL.match(label) for label in host.split("."))
    return True


def parse_log_level(value: str) -> str:
    """A Rust-style (`trace`, `warn`) or Python level name, as a Python level name."""
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return _LOG_LEVEL_NAMES.get(level, level)


def _listen(value: str) -> ListenAddress:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# dest -> (default or None, help); the flag is --dest-with-dashes, the variable DEST_UPPER.
_SETTINGS: dict[str, tuple[str | None, str]] = {
    "listen_plain": ("127.0.0.1:8080", "plain HTTP listen address"),
    "ic_url": (None, "replica base URL(s), comma-separated; required"),
    "domain": (None, "served domain(s), comma-separated; other Host headers get 400; required"),
    "metrics_listen": (None, "metrics listen address (GET /metrics); none: no metrics server"),
    "ic_request_retries": ("4", "attempts per request on connect errors, 429 and 5xx"),
    "ic_request_retry_interval": ("25ms", "pause before the first retry, doubling after"),
    "ic_request_max_size": ("10MB", "largest request body accepted (413 above)"),
    "ic_response_timeout": ("30s", "time the upstream gets to answer, retries included (504)"),
    "graceful_timeout": ("5s", "on SIGTERM, how long in-flight requests may still run"),
    "log_level": ("info", f"one of {', '.join(LOG_LEVELS)}"),
    "network_http_client_count": ("32", "upstream connection pools, used in turn"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ic-gateway",
        description="HTTP gateway in front of a replica's IC API, like dfinity/ic-gateway. "
        "Every flag is also an environment variable (--ic-url = IC_URL); the flag wins.",
    )
    for dest, (default, text) in _SETTINGS.items():
        shown = f" (default {default})" if default is not None else ""
        parser.add_argument(
            f"--{dest.replace('_', '-')}", dest=dest, metavar=dest.upper(), help=text + shown
        )
    return parser


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> GatewayConfig:
    """Build the configuration from flags over variables over defaults; exit 2 when bad."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    values: dict[str, tuple[str | None, str]] = {}
    for dest, (default, _) in _SETTINGS.items():
        flag = f"--{dest.replace('_', '-')}"
        if args[dest] is not None:
            values[dest] = (args[dest], flag)
        elif env.get(dest.upper()):
            values[dest] = (env[dest.upper()], f"{dest.upper()} (environment)")
        else:
            values[dest] = (default, f"{flag} / {dest.upper()}")
    try:
        return _build(values)
    except ConfigError as exc:
        parser.error(str(exc))


def _build(values: Mapping[str, tuple[str | None, str]]) -> GatewayConfig:
    def get(dest: str, parse: Callable[[str], T]) -> T:
        value, source = values[dest]
        if value is None:
            raise ConfigError(f"{source} is required")
        try:
            return parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    metrics_value, _ = values["metrics_listen"]
    return GatewayConfig(
        listen_plain=get("listen_plain", _listen),
        ic_urls=get("ic_url", parse_ic_urls),
        domains=get("domain", parse_domains),
        metrics_listen=None if metrics_value is None else get("metrics_listen", _listen),
        ic_request_retries=get("ic_request_retries", parse_count),
        ic_request_retry_interval=get("ic_request_retry_interval", parse_duration),
        ic_request_max_size=get("ic_request_max_size", parse_size),
        ic_response_timeout=get("ic_response_timeout", parse_duration),
        graceful_timeout=get("graceful_timeout", parse_duration),
        log_level=get("log_level", parse_log_level),
        network_http_client_count=get("network_http_client_count", parse_positive),
    )
