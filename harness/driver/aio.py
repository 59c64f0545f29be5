"""The driver's async face, for what concurrency pays for: every node of a testnet checked at
once, and load through every gateway at once. Usable from async tests (pytest-asyncio, strict
or auto mode) and from `asyncio.run`::

    @pytest.mark.asyncio
    async def test_gateways_carry_load(testnet: Testnet) -> None:
        await testnet.aio.await_all_healthy()
        report = await testnet.aio.load(requests=200, concurrency=8)
        assert report.failed == 0

Each call opens its own aiohttp session (through the backend's SOCKS5 proxy where it has one,
by aiohttp-socks), so nothing is bound to one event loop. Every request is bounded by a timeout
of its own (`asyncio.timeout`), the SOCKS handshake included. `probe_nodes` also serves
`harness ls`, which has a testnet's record (`testnet.json`) instead of a `Testnet`.

Why aiohttp and not httpx, which the driver's sync face uses: a load generator must not be what
a load test measures. Through the 4 gateways of a docker testnet, 32 requests at once on 2
cores, httpx's AsyncClient sent a third to a quarter of what aiohttp sends, and its slowest
requests waited in its connection pool for up to seconds beside busy processes (what other
xdist workers are to a CI test); `bench/loadgen.py` measures both, bench/RESULTS.md has the
figures. `client()` stays an `httpx.AsyncClient` for a test's own requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from harness.driver.errors import NodeNotReady
from harness.driver.services import Service, service_named, unready
from harness.driver.waits import await_until
from harness.node.catalog import IC_GATEWAY_DOMAIN
from harness.node.status import STATUS_PATH, StatusDecodeError, decode_status
from harness.node.tls import plain_http

if TYPE_CHECKING:
    import aiohttp

    from harness.driver.testnet import Testnet

PROBE_TIMEOUT = 5.0
POLL_INTERVAL = 0.1


def async_client(proxy: str | None, connections: int = 100) -> httpx.AsyncClient:
    """An async client for node endpoints: direct, or through `proxy` (`socks5://HOST:PORT`)."""
    return httpx.AsyncClient(
        proxy=proxy,
        trust_env=False,
        verify=plain_http(),
        timeout=PROBE_TIMEOUT,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def _session(proxy: str | None, connections: int = 100) -> aiohttp.ClientSession:
    """The session of the probes and the load: direct, or through `proxy`
    (`socks5://HOST:PORT`, names resolved by the proxy); no timeout of its own (every request
    has one), no cookies, no proxy from the environment. Call it in the loop that uses it.
    aiohttp is imported here, not with the driver, which every pytest start imports."""
    import aiohttp
    from aiohttp_socks import ProxyConnector

    connector = (
        ProxyConnector.from_url(proxy, rdns=True, limit=connections)
        if proxy
        else aiohttp.TCPConnector(limit=connections)
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


def _request_errors() -> tuple[type[Exception], ...]:
    """What a request to a node can fail with besides a timeout: aiohttp's errors, the SOCKS
    proxy's, the socket's."""
    import aiohttp
    from aiohttp_socks import ProxyError

    return (aiohttp.ClientError, ProxyError, OSError)


async def _get(session: aiohttp.ClientSession, url: str, host: str | None = None) -> httpx.Response:
    """GET `url` (with `host` as its Host header), its whole answer as an `httpx.Response`, the
    type the driver's checks take."""
    async with session.get(url, headers={"Host": host} if host else None) as answer:
        body = await answer.read()
        return httpx.Response(answer.status, headers=answer.raw_headers, content=body)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class NodeHealth:
    """What one probe of a node saw: healthy as its role says, or why not."""

    node_id: str
    role: str
    healthy: bool
    detail: str


async def _ready(
    session: aiohttp.ClientSession, url: str, service: Service, host: str | None, timeout: float
) -> tuple[bool, str]:
    """Whether the service at `url` answers ready (`harness.driver.services.unready`)."""
    path = service.ready_path
    assert path is not None  # only services with a readiness check are asked
    try:
        async with asyncio.timeout(timeout):
            response = await _get(session, url + path, host)
    except TimeoutError:
        return False, f"{url}: Timeout: no answer in {timeout:.1f} s"
    except _request_errors() as exc:
        return False, f"{url}: {_error(exc)}"
    wrong = unready(service, response.status_code, response.content)
    return wrong is None, f"{url}: {wrong or 'ready'}"


async def probe_node(
    session: aiohttp.ClientSession, node: Mapping[str, Any], timeout: float = PROBE_TIMEOUT
) -> NodeHealth:
    """Probe one node described as in `Testnet.describe()`: every URL of it that has a
    readiness check (`harness.driver.services`), at once: a replica node's status on 8080 (and
    through ic-gateway on 80, if it runs one), an API boundary node's through ic-boundary, the
    orchestrator's dashboard on every node."""
    urls: Mapping[str, str] = node["urls"]
    role = str(node["role"])
    checks = [
        (url, service, service.host(node.get("domain")))
        for name, url in urls.items()
        if (service := service_named(name)).ready_path is not None
    ]
    results = await asyncio.gather(*(_ready(session, u, s, h, timeout) for u, s, h in checks))
    healthy = all(ok for ok, _ in results)
    detail = "; ".join(text for ok, text in results if not ok) or "healthy"
    return NodeHealth(node["id"], role, healthy, detail)


async def probe_nodes(
    nodes: Sequence[Mapping[str, Any]], proxy: str | None, timeout: float = PROBE_TIMEOUT
) -> list[NodeHealth]:
    """Probe every node at once (see `probe_node`), in the order given."""
    async with _session(proxy) as session:
        return list(await asyncio.gather(*(probe_node(session, n, timeout) for n in nodes)))


@dataclass
class GatewayLoad:
    """The requests one gateway answered during `AsyncTestnet.load`. A failed request is
    counted by its kind in `failures` ("status 502", "no answer in 5 s", the client error's
    name such as "ServerDisconnectedError", "rejected by check"), with the first one of each
    kind in `examples`: the error's text, or the answer's status line and the start of its
    body, and how long it took."""

    node_id: str
    url: str
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def fail(self, kind: str, example: str, seconds: float) -> None:
        self.failed += 1
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.examples.setdefault(kind, f"{example} (after {seconds * 1000:.0f} ms)")

    def failure_summary(self) -> str:
        """Each kind of failure with its count and first example, most frequent first."""
        kinds = sorted(self.failures.items(), key=lambda item: (-item[1], item[0]))
        return "; ".join(f"{count} x {kind}, e.g. {self.examples[kind]}" for kind, count in kinds)


@dataclass
class LoadReport:
    """What `AsyncTestnet.load` sent and what came back, per gateway and in total."""

    path: str
    seconds: float
    gateways: list[GatewayLoad]

    @property
    def ok(self) -> int:
        return sum(g.ok for g in self.gateways)

    @property
    def failed(self) -> int:
        return sum(g.failed for g in self.gateways)

    @property
    def requests_per_second(self) -> float:
        return (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def latency(self, quantile: float) -> float:
        """The latency (seconds) below which `quantile` of all answered requests fell."""
        latencies = sorted(x for g in self.gateways for x in g.latencies)
        if not latencies:
            return math.nan
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))]

    def summary(self) -> str:
        """One line of totals, then a line for each gateway with a failed request: each kind
        of failure with its count and an example."""
        lines = [
            f"{self.ok + self.failed} requests to {self.path} through {len(self.gateways)} "
            f"gateway(s) in {self.seconds:.2f} s ({self.requests_per_second:.0f}/s): "
            f"{self.ok} ok, {self.failed} failed; p50 {self.latency(0.5) * 1000:.1f} ms, "
            f"p99 {self.latency(0.99) * 1000:.1f} ms"
        ]
        lines += [
            f"  {g.node_id} ({g.url}): {g.failed} failed: {g.failure_summary()}"
            for g in self.gateways
            if g.failed
        ]
        return "\n".join(lines)


def _answer(response: httpx.Response, limit: int = 200) -> str:
    """An answer's status line and the start of its body, for a failure's example."""
    body = response.content[:limit]
    text = body.decode("utf-8", "replace") if body.isascii() else body.hex()
    more = "..." if len(response.content) > limit else ""
    return f"{response.status_code} {response.reason_phrase}: {text!r}{more}"


def healthy_status(response: httpx.Response) -> bool:
    """The default check of `load`: a 200 whose CBOR status says healthy."""
    if response.status_code != 200:
        return False
    try:
        return decode_status(response.content).is_healthy
    except StatusDecodeError:
        return False


class AsyncTestnet:
    """A testnet's async face (`Testnet.aio`)."""

    def __init__(self, testnet: Testnet) -> None:
        self.testnet = testnet

    def client(self, connections: int = 100) -> httpx.AsyncClient:
        """A new async client that reaches this testnet's nodes (close it, or use `async with`)."""
        return async_client(self.testnet.backend.http_proxy, connections)

    def _nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.testnet.describe()["nodes"]  # type: ignore[assignment]
        return nodes

    async def health(self, timeout: float = PROBE_TIMEOUT) -> list[NodeHealth]:
        """Probe every node at once, each as its role says (see `probe_node`)."""
        return await probe_nodes(self._nodes(), self.testnet.backend.http_proxy, timeout)

    async def await_all_healthy(self, timeout: float = 60.0) -> list[NodeHealth]:
        """Wait until every node is healthy as its role says, polling all of them at once;
        `NodeNotReady` naming every node that was not, with what it last showed."""
        nodes = self._nodes()
        deadline = time.monotonic() + timeout
        last: dict[str, NodeHealth] = {}

        async def until_healthy(session: aiohttp.ClientSession, node: dict[str, Any]) -> None:
            async def healthy() -> NodeHealth | None:
                left = deadline - time.monotonic()  # a probe never outlasts the wait
                health = await probe_node(session, node, max(0.1, min(PROBE_TIMEOUT, left)))
                last[health.node_id] = health
                return health if health.healthy else None

            with contextlib.suppress(NodeNotReady):  # said below, for every node at once
                await await_until(healthy, f"node {node['id']}", timeout, POLL_INTERVAL)

        async with _session(self.testnet.backend.http_proxy) as session:
            await asyncio.gather(*(until_healthy(session, node) for node in nodes))
        unhealthy = [h for h in last.values() if not h.healthy]
        if unhealthy:
            raise NodeNotReady(
                f"{len(unhealthy)} of {len(nodes)} node(s) of {self.testnet.testnet_id} not "
                f"healthy after {timeout:.0f} s: "
                + "; ".join(f"{h.node_id}: {h.detail}" for h in unhealthy)
            )
        return [last[node["id"]] for node in nodes]

    async def load(
        self,
        path: str = STATUS_PATH,
        *,
        requests: int = 100,
        concurrency: int = 8,
        check: Callable[[httpx.Response], bool] = healthy_status,
        timeout: float = PROBE_TIMEOUT,
    ) -> LoadReport:
        """Send `requests` GETs of `path` through every ic-gateway of the testnet at once,
        `concurrency` at a time per gateway; a request counts as ok when `check` accepts its
        response (default: a healthy CBOR status). Raises `NodeNotReady` when no node runs a
        gateway."""
        gateways = [
            GatewayLoad(node["id"], node["urls"]["gateway"])
            for node in self._nodes()
            if "gateway" in node["urls"]
        ]
        if not gateways:
            raise NodeNotReady(f"no node of {self.testnet.testnet_id} runs ic-gateway")

        async def worker(session: aiohttp.ClientSession, gateway: GatewayLoad, share: int) -> None:
            url = gateway.url + path
            for _ in range(share):
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout):
                        response = await _get(session, url, IC_GATEWAY_DOMAIN)
                except TimeoutError:
                    kind = f"no answer in {timeout:g} s"
                    example = f"GET {path} timed out (asyncio.timeout)"
                except _request_errors() as exc:
                    kind = type(exc).__name__
                    example = _error(exc)
                else:
                    gateway.latencies.append(time.perf_counter() - started)
                    if check(response):
                        gateway.ok += 1
                        continue
                    ok_status = response.status_code == 200
                    kind = "rejected by check" if ok_status else f"status {response.status_code}"
                    example = _answer(response)
                gateway.fail(kind, example, time.perf_counter() - started)

        workers = max(1, min(concurrency, requests))
        shares = [requests // workers + (i < requests % workers) for i in range(workers)]
        started = time.perf_counter()
        proxy = self.testnet.backend.http_proxy
        async with _session(proxy, connections=workers * len(gateways)) as session:
            await asyncio.gather(
                *(worker(session, g, share) for g in gateways for share in shares if share)
            )
        return LoadReport(path, time.perf_counter() - started, gateways)
