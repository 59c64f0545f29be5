"""ic-gateway's parts without a process: settings, routes, header rewriting, retries, health."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.node.gateway.config import load_config, parse_domains, parse_ic_urls, parse_size
from harness.node.gateway.errors import (
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnhealthy,
    UpstreamUnreachable,
)
from harness.node.gateway.forward import Forwarder
from harness.node.gateway.headers import to_client, to_upstream
from harness.node.gateway.health import HealthCheck
from harness.node.gateway.proxy import host_of
from harness.node.gateway.routes import Target, match_route
from harness.node.gateway.upstream import Upstream, UpstreamRequest, UpstreamResponse
from harness.node.listen import ListenAddress
from harness.node.retry import Failure
from harness.node.settings import ConfigError, parse_duration
from harness.node.status import StatusResponse, encode_status

BASE_ENV = {"IC_URL": "http://127.0.0.1:8080", "DOMAIN": "ic0.test"}


# Settings.
def test_defaults_match_the_real_gateway() -> None:
    config = load_config([], BASE_ENV)
    assert config.listen_plain == ListenAddress("127.0.0.1", 8080)
    assert config.ic_urls == ("http://127.0.0.1:8080",)
    assert config.domains == frozenset({"ic0.test"})
    assert config.metrics_listen is None
    assert config.ic_request_retries == 4
    assert config.ic_request_retry_interval == 0.025
    assert config.ic_request_max_size == 10_000_000
    assert config.ic_response_timeout == 30.0
    assert config.graceful_timeout == 5.0
    assert config.log_level == "info"


def test_flags_win_over_variables_and_unknown_variables_are_ignored() -> None:
    env = {
        **BASE_ENV,
        "LISTEN_PLAIN": "[::]:80",
        "METRICS_LISTEN": "[::]:9325",
        "IC_REQUEST_RETRIES": "9",
        "LOG_LEVEL": "warn",
        "DOMAIN": "IC0.Test.,gw.example",
        "ACME_CHALLENGE": "alpn",
        "NETWORK_HTTP_CLIENT_INSECURE_BYPASS_TLS_VERIFICATION": "true",
        "IC_RESPONSE_TIMEOUT": "",  # empty counts as unset
    }
    config = load_config(["--ic-request-retries", "2", "--ic-url", "http://10.0.0.1:8080/"], env)
    assert config.listen_plain == ListenAddress("::", 80)
    assert config.metrics_listen == ListenAddress("::", 9325)
    assert config.ic_request_retries == 2
    assert config.ic_urls == ("http://10.0.0.1:8080",)
    assert config.domains == frozenset({"ic0.test", "gw.example"})
    assert config.log_level == "warning"
    assert config.ic_response_timeout == 30.0


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"DOMAIN": "ic0.test"}, "--ic-url / IC_URL is required"),
        ([], {**BASE_ENV, "IC_REQUEST_MAX_SIZE": "lots"}, "IC_REQUEST_MAX_SIZE (environment): "),
        ([], {**BASE_ENV, "LOG_LEVEL": "loud"}, "LOG_LEVEL (environment): 'loud' is not one of"),
        (["--domain", "bad domain"], BASE_ENV, "--domain: 'bad domain' is not a domain name"),
        (["--listen-plain", "80"], BASE_ENV, "--listen-plain: listen address '80'"),
        ([], {**BASE_ENV, "IC_URL": "replica:8080"}, "IC_URL (environment): 'replica:8080' is"),
        ([], {**BASE_ENV, "IC_REQUEST_RETRY_INTERVAL": "0s"}, "must be above zero"),
    ],
)
def test_bad_values_exit_2_naming_the_setting(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_config(argv, env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("25ms", 0.025), ("1s", 1.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("3", 3.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("10MB", 10_000_000), ("512KiB", 524_288), ("3MiB", 3_145_728), ("1kb", 1000), ("77", 77)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ms", "-1s", "1 fortnight", "1e3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_ic_urls_and_domains() -> None:
    assert parse_ic_urls("http://a:8080, https://b/prefix/,") == (
        "http://a:8080",
        "https://b/prefix",
    )
    for bad in ("a:8080", "http://a:port", "http://user:pw@a", "http://a/?q=1", " , "):
        with pytest.raises(ConfigError):
            parse_ic_urls(bad)
    assert parse_domains("Ic0.App., 127.0.0.1, [::1]") == frozenset({"ic0.app", "127.0.0.1", "::1"})
    for bad in ("a b", "-x.test", "x..test", "a/b", ","):
        with pytest.raises(ConfigError):
            parse_domains(bad)


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"ic0.test", "ic0.test"),
        (b"IC0.Test.:80", "ic0.test"),
        (b"[::1]:80", "::1"),
        (b"[::1]", "::1"),
        (b"127.0.0.1:8080", "127.0.0.1"),
        (b"ic0.test:", "ic0.test"),
    ],
)
def test_host_of_strips_port_case_and_trailing_dot(authority: bytes, host: str) -> None:
    assert host_of(authority) == host


# Routes.
def test_route_table() -> None:
    status = match_route("/api/v2/status")
    assert status is not None
    assert status.target is Target.REPLICA
    assert status.methods == {"GET", "HEAD"}
    assert status.allow == b"GET, HEAD, OPTIONS"
    health = match_route("/health")
    assert health is not None
    assert (health.target, health.allow) == (Target.HEALTH, b"GET, HEAD")
    call = match_route("/api/v4/subnet/aaaaa-aa/call")
    assert call is not None
    assert call.methods == {"POST"}
    for path in (
        "/api/v2/subnet/aaaaa-aa/query",  # v3 only
        "/api/v4/canister/aaaaa-aa/query",
        "/api/v2/canister//call",
        "/api/v2/canister/a/b/call",
        "/api/v2/status/",
        "/health/x",
    ):
        assert match_route(path) is None, path


# Header rewriting.
def test_request_headers_towards_the_replica() -> None:
    headers = [
        (b"host", b"ic0.test"),
        (b"connection", b"keep-alive, X-Secret"),
        (b"x-secret", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"5"),
        (b"expect", b"100-continue"),
        (b"x-forwarded-for", b"198.51.100.1"),
        (b"x-forwarded-for", b"198.51.100.2"),
        (b"x-forwarded-proto", b"https"),
        (b"content-type", b"application/cbor"),
    ]
    assert to_upstream(headers, "127.0.0.9", "http", b"ic0.test") == [
        (b"content-type", b"application/cbor"),
        (b"x-forwarded-for", b"198.51.100.1, 198.51.100.2, 127.0.0.9"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"ic0.test"),
    ]
    assert to_upstream([], None, "http", b"h") == [
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"h"),
    ]


def test_response_headers_towards_the_client() -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"3"),
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"connection", b"x-private"),
        (b"x-private", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"x-request-id", b"abc"),
    ]
    assert to_client(headers, success=False) == [
        (b"content-type", b"text/plain"),
        (b"x-request-id", b"abc"),
    ]
    assert to_client(headers, success=True) == [
        (b"x-request-id", b"abc"),
        (b"content-type", b"application/cbor"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
    ]


# Retries, round-robin and the deadline, with scripted upstreams.
class ScriptedUpstream(Upstream):
    """Answers from a list of outcomes, one per call: a status code or an exception."""

    def __init__(self, url: str, outcomes: list[int | UpstreamError], delay: float = 0.0):
        super().__init__(url)
        self.outcomes = outcomes
        self.delay = delay
        self.calls: list[float] = []

    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        self.calls.append(time.monotonic())
        if self.delay:
            await asyncio.sleep(self.delay)
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, UpstreamError):
            raise outcome
        return UpstreamResponse(outcome, [], str(outcome).encode())


REQUEST = UpstreamRequest("POST", "/api/v3/canister/aaaaa-aa/call", [], b"x")


def _forward(forwarder: Forwarder) -> tuple[UpstreamResponse, Upstream]:
    return asyncio.run(forwarder.forward(REQUEST))


def test_connect_errors_hang_ups_and_5xx_are_retried_with_doubling_pauses() -> None:
    refused = UpstreamUnreachable("http://a", "Connection refused")
    hung_up = UpstreamUnreachable(
        "http://a", "closed the connection unanswered", Failure.UNANSWERED
    )
    upstream = ScriptedUpstream("http://a", [refused, hung_up, 503, 429, 200])
    attempts: list[tuple[str, str]] = []
    forwarder = Forwarder(
        [upstream], 5, 0.02, 5.0, lambda u, outcome: attempts.append((u.url, outcome))
    )
    response, used = _forward(forwarder)
    assert (response.status, used) == (200, upstream)
    assert attempts == [
        ("http://a", "backend_error_connect"),
        ("http://a", "backend_error_connect"),
        ("http://a", "503"),
        ("http://a", "429"),
        ("http://a", "200"),
    ]
    pauses = [b - a for a, b in zip(upstream.calls, upstream.calls[1:], strict=False)]
    for pause, expected in zip(pauses, (0.02, 0.04, 0.08, 0.16), strict=True):
        assert expected <= pause < expected + 0.1


def test_last_answer_is_passed_on_and_last_error_raised() -> None:
    assert (
        _forward(Forwarder([ScriptedUpstream("http://a", [500])], 3, 0.001, 5.0))[0].status == 500
    )
    refused = UpstreamUnreachable("http://a", "Connection refused")
    upstream = ScriptedUpstream("http://a", [refused])
    with pytest.raises(UpstreamUnreachable):
        _forward(Forwarder([upstream], 3, 0.001, 5.0))
    assert len(upstream.calls) == 3
    # 0 retries is still one attempt.
    upstream = ScriptedUpstream("http://a", [refused])
    with pytest.raises(UpstreamUnreachable):
        _forward(Forwarder([upstream], 0, 0.001, 5.0))
    assert len(upstream.calls) == 1


@pytest.mark.parametrize(
    "failure", [Failure.BROKEN_ANSWER, Failure.CONNECTION_LOST, Failure.TIMED_OUT, Failure.OTHER]
)
def test_4xx_and_failures_after_sending_are_not_retried(failure: Failure) -> None:
    upstream = ScriptedUpstream("http://a", [404, 200])
    assert _forward(Forwarder([upstream], 4, 0.001, 5.0))[0].status == 404
    broken = UpstreamError("http://a", f"failed: {failure.value}", failure)
    upstream = ScriptedUpstream("http://a", [broken, 200])
    with pytest.raises(UpstreamError):
        _forward(Forwarder([upstream], 4, 0.001, 5.0))
    assert len(upstream.calls) == 1


def test_requests_rotate_over_upstreams_and_retries_move_on() -> None:
    refused = UpstreamUnreachable("http://a", "Connection refused")
    a = ScriptedUpstream("http://a", [refused])
    b = ScriptedUpstream("http://b", [200])
    forwarder = Forwarder([a, b], 4, 0.001, 5.0)

    async def four() -> list[str]:
        return [(await forwarder.forward(REQUEST))[1].url for _ in range(4)]

    assert asyncio.run(four()) == ["http://b"] * 4
    assert (len(a.calls), len(b.calls)) == (2, 4)


def test_the_deadline_covers_attempts_and_pauses() -> None:
    slow = ScriptedUpstream("http://a", [200], delay=5.0)
    attempts: list[str] = []
    forwarder = Forwarder([slow], 4, 0.001, 0.1, lambda _, outcome: attempts.append(outcome))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"upstream http://a did not answer within 0.1s"):
        _forward(forwarder)
    assert time.monotonic() - started < 3.0  # the upstream's 5 s delay was not waited out
    assert attempts == ["backend_timeout"]


def test_a_deadline_in_a_pause_ends_with_the_last_outcome() -> None:
    upstream = ScriptedUpstream("http://a", [503])
    response, _ = _forward(Forwarder([upstream], 4, 0.2, 0.1))
    assert response.status == 503
    refused = UpstreamUnreachable("http://a", "Connection refused")
    upstream = ScriptedUpstream("http://a", [refused])
    with pytest.raises(UpstreamUnreachable):
        _forward(Forwarder([upstream], 4, 0.2, 0.1))
    assert len(upstream.calls) == 1


# Health.
def _status(health: str) -> UpstreamResponse:
    body = encode_status(StatusResponse(replica_health_status=health))
    return UpstreamResponse(200, [], body)


class StatusUpstream(Upstream):
    def __init__(self, url: str, answer: UpstreamResponse | UpstreamError) -> None:
        super().__init__(url)
        self.answer = answer
        self.calls = 0

    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        self.calls += 1
        await asyncio.sleep(0.01)
        if isinstance(self.answer, UpstreamError):
            raise self.answer
        return self.answer


def test_health_is_shared_by_concurrent_callers_and_cached() -> None:
    upstream = StatusUpstream("http://a", _status("healthy"))
    check = HealthCheck([upstream], ttl=60, timeout=1)

    async def many() -> None:
        await asyncio.gather(*(check.check() for _ in range(20)))
        await check.check()

    asyncio.run(many())
    assert upstream.calls == 1


def test_health_reasons() -> None:
    async def verdict(*upstreams: Upstream) -> str | None:
        try:
            await HealthCheck(upstreams, ttl=0, timeout=1).check()
        except UpstreamUnhealthy as exc:
            assert exc.status == 503
            return exc.message
        return None

    starting = StatusUpstream("http://a", _status("starting"))
    healthy = StatusUpstream("http://b", _status("healthy"))
    refused = StatusUpstream("http://c", UpstreamUnreachable("http://c", "Connection refused"))
    garbage = StatusUpstream("http://d", UpstreamResponse(200, [], b"<html>"))
    error = StatusUpstream("http://e", UpstreamResponse(500, [], b""))
    assert asyncio.run(verdict(starting, healthy)) is None
    assert asyncio.run(verdict(starting)) == (
        "upstream http://a is not healthy: replica_health_status is 'starting'"
    )
    assert asyncio.run(verdict(refused, starting)) == (
        "upstream http://c is not healthy: unreachable: Connection refused"
    )
    assert "is not self-described CBOR" in (asyncio.run(verdict(garbage)) or "")
    assert asyncio.run(verdict(error)) == (
        "upstream http://e is not healthy: /api/v2/status answered 500"
    )
