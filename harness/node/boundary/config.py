"""ic-boundary's configuration: flags, each also an environment variable, into one frozen value.

Every flag `--some-flag` can also be given as the variable `SOME_FLAG`; the flag wins, and an
empty variable counts as unset. Unknown variables are ignored, because the orchestrator passes
the IC's whole ic-boundary env file (`LISTEN_HTTPS_PORT`, `TLS_CERT_PATH`, ...). The machinery
is `harness.node.settings`; messages name a setting as `--some-flag (SOME_FLAG)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.node.layout import Port
from harness.node.listen import ListenAddress, parse_listen
from harness.node.settings import (
    LOG_LEVELS,
    ConfigError,
    Setting,
    Values,
    load_settings,
    name_both,
    parse_duration,
    parse_log_level,
)


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
    registry_url: str | None
    upstreams: tuple[StaticUpstream, ...]
    registry_poll_interval: float
    health_check_interval: float
    upstream_timeout: float
    graceful_timeout: float
    log_level: str
    crypto_config: str | None = None


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


# The flag is --dest-with-dashes, the variable DEST_UPPER.
_SETTINGS: dict[str, Setting] = {
    "tls_hostname": Setting(None, "the node's domain; requests for other hosts get 400"),
    "crypto_config": Setting(None, "accepted for compatibility and ignored (plain HTTP only)"),
    "listen_http_addr": Setting(f"[::]:{Port.IC_BOUNDARY}", "API listen address, plain HTTP"),
    "obs_metrics_addr": Setting(f"[::]:{Port.IC_BOUNDARY_METRICS}", "metrics listen address"),
    "registry_local_store_path": Setting(None, "registry store directory to route from"),
    "registry_url": Setting(None, "or a registry service to route from (http://HOST:PORT)"),
    "upstreams": Setting(None, "static routing instead of a registry: SUBNET_ID=URL,..."),
    "registry_poll_interval": Setting("1s", "how often to read the registry"),
    "health_check_interval": Setting("1s", "how often to probe every replica"),
    "upstream_timeout": Setting("10s", "timeout of a proxied request"),
    "graceful_timeout": Setting("5s", "how long SIGTERM waits for requests"),
    "log_level": Setting("info", f"one of {', '.join(LOG_LEVELS)}"),
}


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> BoundaryConfig:
    """Build the configuration; bad or missing values end the program with exit code 2."""
    return load_settings(
        argv,
        env,
        prog="ic-boundary",
        description="API boundary node: routes IC API requests to healthy replicas. "
        "Every flag is also an environment variable (--tls-hostname = TLS_HOSTNAME).",
        settings=_SETTINGS,
        naming=name_both,
        build=_build,
    )


def _hostname(value: str) -> str:
    return value.lower().rstrip(".")


def _build(values: Values) -> BoundaryConfig:
    get = values.get
    registry, upstreams = values.raw("registry_local_store_path"), values.raw("upstreams")
    url = values.raw("registry_url")
    if [registry, url, upstreams].count(None) != 2:
        raise ConfigError(
            f"give exactly one of {values.name('registry_local_store_path')}, "
            f"{values.name('registry_url')} or {values.name('upstreams')}"
            + (", not several" if [registry, url, upstreams].count(None) < 2 else "")
        )
    return BoundaryConfig(
        tls_hostname=get("tls_hostname", _hostname),
        listen_http_addr=get("listen_http_addr", parse_listen),
        obs_metrics_addr=get("obs_metrics_addr", parse_listen),
        registry_local_store_path=Path(registry) if registry is not None else None,
        registry_url=url,
        upstreams=values.optional("upstreams", parse_upstreams) or (),
        registry_poll_interval=get("registry_poll_interval", parse_duration),
        health_check_interval=get("health_check_interval", parse_duration),
        upstream_timeout=get("upstream_timeout", parse_duration),
        graceful_timeout=get("graceful_timeout", parse_duration),
        log_level=get("log_level", parse_log_level),
        crypto_config=values.raw("crypto_config"),
    )
