"""ic-gateway's configuration: flags, each also an environment variable, into one frozen value.

Like the real ic-gateway (`#[clap(env, long)]`), every flag `--some-flag` can be given as the
variable `SOME_FLAG`; the flag wins, and an empty variable counts as unset. Unknown variables
are ignored, because the orchestrator passes the real gateway's whole env file (`LOG_STDOUT`,
`CERT_PROVIDER_DIR`, ...). A bad value ends the program with exit code 2 and a message that
names the variable or flag it came from (the machinery is `harness.node.settings`).

Values: durations as `25ms`, `1s`, `1.5s`, `2m`, `1h` (a bare number is seconds); sizes as
`10MB` (10,000,000 bytes), `512KiB`, `3MiB` (binary units), a bare number is bytes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from harness.node.listen import ListenAddress, parse_listen
from harness.node.settings import (
    LOG_LEVELS,
    ConfigError,
    Setting,
    Values,
    load_settings,
    name_as_given,
    parse_duration,
    parse_log_level,
)

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


# The real ic-gateway's own default, not a node port: on a node the orchestrator always sets
# LISTEN_PLAIN (to `harness.node.layout.Port.IC_GATEWAY`).
_DEFAULT_LISTEN_PLAIN = "127.0.0.1:8080"

# The flag is --dest-with-dashes, the variable DEST_UPPER.
_SETTINGS: dict[str, Setting] = {
    "listen_plain": Setting(_DEFAULT_LISTEN_PLAIN, "plain HTTP listen address"),
    "ic_url": Setting(None, "replica base URL(s), comma-separated; required"),
    "domain": Setting(
        None, "served domain(s), comma-separated; other Host headers get 400; required"
    ),
    "metrics_listen": Setting(
        None, "metrics listen address (GET /metrics); none: no metrics server"
    ),
    "ic_request_retries": Setting("4", "attempts per request on connect errors, 429 and 5xx"),
    "ic_request_retry_interval": Setting("25ms", "pause before the first retry, doubling after"),
    "ic_request_max_size": Setting("10MB", "largest request body accepted (413 above)"),
    "ic_response_timeout": Setting(
        "30s", "time the upstream gets to answer, retries included (504)"
    ),
    "graceful_timeout": Setting("5s", "on SIGTERM, how long in-flight requests may still run"),
    "log_level": Setting("info", f"one of {', '.join(LOG_LEVELS)}"),
    "network_http_client_count": Setting(
        "32", "accepted as the real gateway's, and ignored: one connection pool per IC_URL"
    ),
}


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> GatewayConfig:
    """Build the configuration from flags over variables over defaults; exit 2 when bad."""
    return load_settings(
        argv,
        env,
        prog="ic-gateway",
        description="HTTP gateway in front of a replica's IC API, like dfinity/ic-gateway. "
        "Every flag is also an environment variable (--ic-url = IC_URL); the flag wins.",
        settings=_SETTINGS,
        naming=name_as_given,
        build=_build,
    )


def _build(values: Values) -> GatewayConfig:
    get = values.get
    return GatewayConfig(
        listen_plain=get("listen_plain", parse_listen),
        ic_urls=get("ic_url", parse_ic_urls),
        domains=get("domain", parse_domains),
        metrics_listen=values.optional("metrics_listen", parse_listen),
        ic_request_retries=get("ic_request_retries", parse_count),
        ic_request_retry_interval=get("ic_request_retry_interval", parse_duration),
        ic_request_max_size=get("ic_request_max_size", parse_size),
        ic_response_timeout=get("ic_response_timeout", parse_duration),
        graceful_timeout=get("graceful_timeout", parse_duration),
        log_level=get("log_level", parse_log_level),
        network_http_client_count=get("network_http_client_count", parse_positive),
    )
