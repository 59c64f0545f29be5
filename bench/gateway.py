"""Gateway benchmark: wrk against the replica directly, through our ic-gateway, and through
nginx as a reverse proxy to the same upstream, each pinned to the same cores.

    .venv/bin/python bench/gateway.py [--duration 5] [--rounds 3] [--connections 16]
        [--upstreams replica,static] [--profile DIR] [--json-out FILE]

Routes: `GET /api/v2/status` and `POST /api/v2/canister/<id>/query` with a 1 KiB CBOR body (a
wrk Lua script), all with `Host: gateway.icp` (the gateway's domain; the others ignore it).

Two upstreams, one after the other:

- `replica`: our replica (`python -m harness.node.replica`), started as a real process;
- `static`: nginx serving the replica's own answers (captured at the start) as static files,
  a far faster upstream, so the proxies themselves are what is measured.

For each upstream: the upstream directly, ic-gateway (`python -m harness.node.gateway`,
`LISTEN_PLAIN`, `IC_URL`, `DOMAIN=gateway.icp`) in front of it, ic-boundary (`python -m
harness.node.boundary --upstreams s-bench=<upstream>`; no target, its figures), and nginx (one
worker, upstream keep-alive, config written to a temp dir, `daemon off`, a child of this
process). Every server runs under `taskset -c <server cpus>`, wrk under `taskset -c <client
cpus>` (`-t1`). Each round runs every target once per route, in rotated order, after a
one-second warm-up; medians over rounds are reported, with each server's CPU time per request
(from psutil). Targets: ic-gateway's req/s at least 0.8x nginx's through the replica and 0.5x
against the static upstream, its p99 at most 1.5x nginx's through the replica. Also the replica
stub served directly against nginx serving the same answers. `--profile DIR`: then py-spy
samples ic-gateway during one more run per route, and the JSON says where its CPU went.

Needs `wrk` and `nginx` (Debian packages `wrk`, `nginx-light` or `nginx`): installed with
apt-get when missing and running as root, else the command to run is printed. Only loopback
addresses (127.251-254.x.y). Everything it starts is stopped, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import httpx
import psutil
from benchlib import (
    PYTHON,
    REPO,
    BenchError,
    Children,
    console,
    emit,
    free_loopback_ip,
    machine,
    median,
    stop_on_sigterm,
    verdict,
)
from rich.table import Table

from harness.driver.errors import NodeNotReady
from harness.driver.waits import wait_until
from harness.node.status import decode_status

DOMAIN = "gateway.icp"
CANISTER = "ryjl3-tyaaa-aaaaa-aaaba-cai"
STATUS_PATH = "/api/v2/status"
QUERY_PATH = f"/api/v2/canister/{CANISTER}/query"
BODY_SIZE = 1024
REPLICA_PORT, METRICS_PORT, GATEWAY_PORT, NGINX_PORT, STATIC_PORT = 8080, 9090, 80, 8081, 8082
BOUNDARY_PORT, BOUNDARY_METRICS_PORT = 8083, 9324
# ic-gateway's req/s against nginx's: through the replica, and against the static upstream,
# where the proxy's own cost is what is measured.
TARGET_THROUGHPUT = {"replica": 0.8, "static": 0.5}
TARGET_P99 = 1.5  # gateway p99 <= 1.5 x nginx's, through the replica
PROFILE_RATE = 250  # py-spy samples per second
START_TIMEOUT = 20.0
WRK_GRACE = 30.0

LUA = r"""
local body_file = os.getenv("BENCH_BODY_FILE")
wrk.headers["Host"] = "{domain}"
if body_file ~= nil and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/cbor"
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/tmp-{name}/body;
    proxy_temp_path {tmp}/tmp-{name}/proxy;
    fastcgi_temp_path {tmp}/tmp-{name}/fastcgi;
    uwsgi_temp_path {tmp}/tmp-{name}/uwsgi;
    scgi_temp_path {tmp}/tmp-{name}/scgi;
    keepalive_requests 1000000;
{server}
}}
"""

PROXY_SERVER = """
    upstream backend {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen {listen} backlog=1024;
        server_name {domain};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering on;
        }}
    }}
"""

# POST to a static file is a 405; `error_page 405 =200 $uri` serves the file instead (as GET).
STATIC_SERVER = """
    server {{
        listen {listen} backlog=1024;
        root {tmp}/static;
        default_type application/cbor;
        etag off;
        location / {{ error_page 405 =200 $uri; }}
    }}
"""


# ----------------------------------------------------------------------------- tools
def ensure_tools() -> dict[str, str]:
    """Paths of wrk and nginx; apt-get installs them when missing and running as root."""
    missing = [tool for tool in ("wrk", "nginx") if _which(tool) is None]
    if missing:
        packages = ["wrk" if "wrk" in missing else "", "nginx-light" if "nginx" in missing else ""]
        packages = [p for p in packages if p]
        command = (
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends " + " ".join(packages)
        )
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise BenchError(f"missing {', '.join(missing)}; install with: sudo sh -c '{command}'")
        if not Path("/usr/sbin/policy-rc.d").exists():
            console.log(
                "[yellow]no /usr/sbin/policy-rc.d: installing nginx may start its system "
                "service (port 80 on all addresses); stop it with `service nginx stop`[/yellow]"
            )
        console.log(f"installing {' '.join(packages)}: {command}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        ):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed: {done.stderr[-1000:]}")
        if "nginx" in missing and _which("nginx") is None:  # nginx-light is gone in newer suites
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx"],
                env=env,
                capture_output=True,
                timeout=900,
                check=True,
            )
    tools = {tool: _which(tool) for tool in ("wrk", "nginx")}
    if None in tools.values():
        raise BenchError(f"still missing after installing: {tools}")
    return {k: v for k, v in tools.items() if v}


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def query_body(size: int = BODY_SIZE) -> bytes:
    """A CBOR query envelope, like an agent's, padded to exactly `size` bytes."""
    pad = size - 200
    for _ in range(10):
        body = cbor2.dumps(
            {
                "content": {
                    "request_type": "query",
                    "sender": b"\x04",
                    "canister_id": bytes.fromhex("00000000000000020101"),
                    "method_name": "greet",
                    "arg": b"D" * pad,
                    "ingress_expiry": 1_800_000_000_000_000_000,
                }
            }
        )
        if len(body) == size:
            return body
        pad += size - len(body)
    raise BenchError(f"could not make a {size}-byte CBOR body")


def default_cpus() -> tuple[str, str]:
    """(server cpus, client cpus): the last CPU for the servers, the others for wrk."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        return str(cpus[0]), str(cpus[0])
    return str(cpus[-1]), ",".join(str(c) for c in cpus[:-1])


# ----------------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        """CPU time of the process and its children (nginx's worker) so far."""
        total = 0.0
        try:
            top = psutil.Process(self.process.pid)
            for process in [top, *top.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        return total


class Lab:
    """The servers of one upstream set, started as children pinned to the server cpus."""

    def __init__(self, tmp: Path, ip: str, cpus: str, nginx: str, children: Children) -> None:
        self.tmp = tmp
        self.ip = ip
        self.cpus = cpus
        self.nginx = nginx
        self.children = children
        self.http = httpx.Client(trust_env=False, timeout=2.0)

    def close(self) -> None:
        self.http.close()

    def _await(self, url: str, host: str | None = None, method: str = "GET") -> None:
        headers = {"host": host} if host else {}

        def ok() -> bool | None:
            response = self.http.request(method, url, headers=headers)
            return True if response.status_code in (200, 204) else None

        wait_until(ok, f"{url} answering", START_TIMEOUT, 0.05)

    def replica(self) -> Server:
        process = self.children.start(
            [
                PYTHON,
                "-m",
                "harness.node.replica",
                "--http-listen",
                f"{self.ip}:{REPLICA_PORT}",
                "--metrics-listen",
                f"{self.ip}:{METRICS_PORT}",
                "--replica-version",
                "bench",
                "--log-level",
                "warning",
            ],
            log=self.tmp / "replica.log",
            cpus=self.cpus,
            cwd=REPO,
        )
        url = f"http://{self.ip}:{REPLICA_PORT}"

        def healthy() -> bool | None:
            return (
                True if decode_status(self.http.get(url + STATUS_PATH).content).is_healthy else None
            )

        wait_until(healthy, "replica healthy", START_TIMEOUT, 0.05)
        return Server("replica", process, url)

    def gateway(self, upstream: str) -> Server:
        env = {
            **os.environ,
            "LISTEN_PLAIN": f"{self.ip}:{GATEWAY_PORT}",
            "IC_URL": upstream,
            "DOMAIN": DOMAIN,
            "LOG_LEVEL": "warning",
        }
        process = self.children.start(
            [PYTHON, "-m", "harness.node.gateway"],
            log=self.tmp / "gateway.log",
            env=env,
            cpus=self.cpus,
            cwd=REPO,
        )
        url = f"http://{self.ip}:{GATEWAY_PORT}"
        self._await(url + STATUS_PATH, DOMAIN)
        return Server("ic-gateway", process, url)

    def boundary(self, upstream: str) -> Server:
        """ic-boundary with `upstream` as the one replica of its one subnet (`--upstreams`)."""
        process = self.children.start(
            [PYTHON, "-m", "harness.node.boundary", "--tls-hostname", DOMAIN,
             "--listen-http-addr", f"{self.ip}:{BOUNDARY_PORT}",
             "--obs-metrics-addr", f"{self.ip}:{BOUNDARY_METRICS_PORT}",
             "--upstreams", f"s-bench={upstream}", "--log-level", "warning"],
            log=self.tmp / "boundary.log",
            cpus=self.cpus,
            cwd=REPO,
        )  # fmt: skip
        url = f"http://{self.ip}:{BOUNDARY_PORT}"
        self._await(url + STATUS_PATH, DOMAIN)
        return Server("ic-boundary", process, url)

    def _nginx(self, name: str, server_block: str, port: int) -> Server:
        (self.tmp / f"tmp-{name}").mkdir(exist_ok=True)
        conf = self.tmp / f"nginx-{name}.conf"
        conf.write_text(NGINX_CONF.format(tmp=self.tmp, name=name, server=server_block))
        process = self.children.start(
            [self.nginx, "-p", str(self.tmp), "-c", str(conf), "-e", str(self.tmp / "stderr")],
            log=self.tmp / f"nginx-{name}.out",
            cpus=self.cpus,
        )
        url = f"http://{self.ip}:{port}"
        try:
            self._await(url + STATUS_PATH, DOMAIN)
        except NodeNotReady:
            error_log = self.tmp / f"nginx-{name}.error.log"
            tail = error_log.read_text()[-800:] if error_log.exists() else ""
            raise BenchError(f"nginx {name} did not answer: {tail}") from None
        return Server(f"nginx {name}", process, url)

    def nginx_proxy(self, upstream: str) -> Server:
        block = PROXY_SERVER.format(
            upstream=upstream.removeprefix("http://"),
            listen=f"{self.ip}:{NGINX_PORT}",
            domain=DOMAIN,
        )
        server = self._nginx("proxy", block, NGINX_PORT)
        server.name = "nginx"
        return server

    def static_upstream(self, status_body: bytes, query_reply: bytes) -> Server:
        static = self.tmp / "static"
        (static / STATUS_PATH.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (static / STATUS_PATH.lstrip("/")).write_bytes(status_body)
        (static / QUERY_PATH.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (static / QUERY_PATH.lstrip("/")).write_bytes(query_reply)
        for path in [self.tmp, *static.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's worker runs as nobody
        block = STATIC_SERVER.format(listen=f"{self.ip}:{STATIC_PORT}", tmp=self.tmp)
        server = self._nginx("static", block, STATIC_PORT)
        server.name = "static nginx"
        return server


# ----------------------------------------------------------------------------- wrk
def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    body_file: Path | None,
    duration: float,
    connections: int,
    cpus: str,
) -> dict[str, Any]:
    argv = [
        "taskset",
        "-c",
        cpus,
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file) if body_file else ""}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration + WRK_GRACE
    )
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout[-500:]}{done.stderr}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": raw["requests"] / seconds,
        "requests": raw["requests"],
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "error_detail": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
    }


@dataclass
class Target:
    name: str
    url: str
    servers: list[Server]


def measure_set(
    upstream_name: str,
    targets: list[Target],
    routes: dict[str, tuple[str, Path | None]],
    args: argparse.Namespace,
    wrk: str,
    script: Path,
) -> list[dict[str, Any]]:
    """Every (target, route) `rounds` times, rotating the order per round; the medians."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_index in range(args.rounds):
        order = targets[round_index % len(targets) :] + targets[: round_index % len(targets)]
        for route, (path, body_file) in routes.items():
            for target in order:
                url = target.url + path
                run_wrk(wrk, url, script, body_file, 1, args.connections, args.client_cpus)
                cpu_before = {s.name: s.cpu_seconds() for s in target.servers}
                result = run_wrk(
                    wrk, url, script, body_file, args.duration, args.connections, args.client_cpus
                )
                cpu = {s.name: s.cpu_seconds() - cpu_before[s.name] for s in target.servers}
                result["cpu_ms_per_request"] = {
                    name: 1000 * seconds / max(1, result["requests"])
                    for name, seconds in cpu.items()
                }
                runs.setdefault((target.name, route), []).append(result)
                console.log(
                    f"{upstream_name:8} {route:6} {target.name:11} round {round_index + 1}: "
                    f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                    f"p99 {result['p99_ms']:6.2f} ms  errors {result['errors']}"
                )
    summary = []
    for (target_name, route), results in runs.items():
        names = results[0]["cpu_ms_per_request"].keys()
        summary.append(
            {
                "upstream": upstream_name,
                "route": route,
                "target": target_name,
                "rps": round(median([r["rps"] for r in results]), 1),
                "p50_ms": round(median([r["p50_ms"] for r in results]), 3),
                "p99_ms": round(median([r["p99_ms"] for r in results]), 3),
                "errors": sum(r["errors"] for r in results),
                "cpu_ms_per_request": {
                    name: round(median([r["cpu_ms_per_request"][name] for r in results]), 4)
                    for name in names
                },
                "rounds": [
                    {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in results
                ],
            }
        )
    return summary


def compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gateway against nginx per (upstream, route): the ratios and the targets."""
    by_key = {(r["upstream"], r["route"], r["target"]): r for r in results}
    checks = []
    for upstream, route, _ in sorted({k for k in by_key if k[2] == "ic-gateway"}):
        gateway = by_key[(upstream, route, "ic-gateway")]
        nginx = by_key[(upstream, route, "nginx")]
        direct = by_key.get((upstream, route, "direct"))
        throughput = gateway["rps"] / nginx["rps"]
        p99 = gateway["p99_ms"] / nginx["p99_ms"]
        p99_target = TARGET_P99 if upstream == "replica" else None
        upstream_name = "replica" if upstream == "replica" else "static nginx"
        # The upstream is the bottleneck of a proxied run when it burns more CPU per request
        # than the proxy in front of it (they share the server cores).
        upstream_bound = {
            proxy: (
                by_key[(upstream, route, proxy)]["cpu_ms_per_request"].get(upstream_name, 0.0)
                >= max(
                    v
                    for k, v in by_key[(upstream, route, proxy)]["cpu_ms_per_request"].items()
                    if k != upstream_name
                )
            )
            for proxy in ("ic-gateway", "nginx")
        }
        checks.append(
            {
                "upstream": upstream,
                "route": route,
                "gateway_rps": gateway["rps"],
                "nginx_rps": nginx["rps"],
                "direct_rps": direct["rps"] if direct else None,
                "throughput_ratio": round(throughput, 3),
                "throughput_target": TARGET_THROUGHPUT[upstream],
                "throughput_met": throughput >= TARGET_THROUGHPUT[upstream],
                "gateway_p99_ms": gateway["p99_ms"],
                "nginx_p99_ms": nginx["p99_ms"],
                "p99_ratio": round(p99, 3),
                "p99_target": p99_target,
                "p99_met": None if p99_target is None else p99 <= p99_target,
                "upstream_is_bottleneck_for_both": all(upstream_bound.values()),
                "upstream_bound": upstream_bound,
            }
        )
    return checks


def replica_against_static(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The replica stub served directly against nginx serving its own answers (the same bytes)
    as static files, per route: what every load test through a gateway has behind it."""
    by_key = {(r["upstream"], r["route"], r["target"]): r for r in results}
    rows = []
    for route in sorted({k[1] for k in by_key}):
        replica = by_key.get(("replica", route, "direct"))
        static = by_key.get(("static", route, "direct"))
        if replica is None or static is None:
            continue
        rows.append(
            {
                "route": route,
                "replica_rps": replica["rps"],
                "static_nginx_rps": static["rps"],
                "ratio": round(replica["rps"] / static["rps"], 3),
                "replica_cpu_ms_per_request": replica["cpu_ms_per_request"]["replica"],
                "static_nginx_cpu_ms_per_request": static["cpu_ms_per_request"]["static nginx"],
            }
        )
    return rows


def profile(
    gateway: Server,
    upstream_name: str,
    routes: dict[str, tuple[str, Path | None]],
    args: argparse.Namespace,
    wrk: str,
    script: Path,
    out: Path,
) -> dict[str, Any]:
    """One more wrk run per route against ic-gateway with py-spy sampling it (not counted in
    the results): where its CPU goes, by the function lines that spend it (self) and those
    under which it is spent (inclusive), in percent of the samples."""
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    profiles: dict[str, Any] = {}
    for route, (path, body_file) in routes.items():
        raw = out / f"gateway-{upstream_name}-{route}.txt"
        recorder = subprocess.Popen(
            [spy, "record", "--nonblocking", "-r", str(PROFILE_RATE), "-f", "raw", "-o", str(raw),
             "-d", str(max(1, round(args.duration))), "-p", str(gateway.process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        run_wrk(wrk, gateway.url + path, script, body_file, args.duration, args.connections,
                args.client_cpus)  # fmt: skip
        _, errors = recorder.communicate(timeout=args.duration + WRK_GRACE)
        if recorder.returncode != 0 or not raw.exists():
            raise BenchError(f"py-spy failed ({recorder.returncode}): {errors[-500:]}")
        profiles[route] = {"file": str(raw), **summarize_profile(raw)}
        console.log(f"{upstream_name:8} {route:6} ic-gateway profiled: {raw}")
    return profiles


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """The top frames of a py-spy raw (collapsed stacks) file, self and inclusive."""
    own: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            under[frame] = under.get(frame, 0) + count

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [(frame, round(100 * n / max(1, total), 1)) for frame, n in best]

    return {"samples": total, "self": ranked(own), "inclusive": ranked(under)}


def boundary_against_nginx(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ic-boundary against nginx per (upstream, route): no target, the figures."""
    by_key = {(r["upstream"], r["route"], r["target"]): r for r in results}
    rows = []
    for upstream, route, _ in sorted({k for k in by_key if k[2] == "ic-boundary"}):
        boundary = by_key[(upstream, route, "ic-boundary")]
        nginx = by_key[(upstream, route, "nginx")]
        rows.append(
            {
                "upstream": upstream,
                "route": route,
                "boundary_rps": boundary["rps"],
                "nginx_rps": nginx["rps"],
                "throughput_ratio": round(boundary["rps"] / nginx["rps"], 3),
                "boundary_p99_ms": boundary["p99_ms"],
                "p99_ratio": round(boundary["p99_ms"] / nginx["p99_ms"], 3),
                "boundary_cpu_ms_per_request": boundary["cpu_ms_per_request"]["ic-boundary"],
            }
        )
    return rows


def main() -> None:
    server_cpus, client_cpus = default_cpus()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--server-cpus", default=server_cpus)
    parser.add_argument("--client-cpus", default=client_cpus)
    parser.add_argument(
        "--upstreams", default="replica,static", help="replica, static or both (default)"
    )
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the measured runs, profile ic-gateway under load with py-spy (the dev "
        "extra), one more run per route; raw stacks in DIR, the top frames in the JSON",
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 120:
        parser.error("--rounds must be 1-20 and --duration 1-120 seconds")
    stop_on_sigterm()
    tools = ensure_tools()
    before = machine()
    body = query_body()
    results: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name, Children() as children:
        tmp = Path(tmp_name)
        script = tmp / "bench.lua"
        script.write_text(LUA.format(domain=DOMAIN))
        body_file = tmp / "query.cbor"
        body_file.write_bytes(body)
        routes: dict[str, tuple[str, Path | None]] = {
            "status": (STATUS_PATH, None),
            "query": (QUERY_PATH, body_file),
        }
        ip = free_loopback_ip(
            [REPLICA_PORT, METRICS_PORT, GATEWAY_PORT, NGINX_PORT, STATIC_PORT, BOUNDARY_PORT]
        )
        lab = Lab(tmp, ip, args.server_cpus, tools["nginx"], children)
        try:
            replica = lab.replica()
            status_body = lab.http.get(replica.url + STATUS_PATH).content
            query_reply = lab.http.post(
                replica.url + QUERY_PATH,
                content=body,
                headers={"content-type": "application/cbor"},
            ).content
            wanted = {u.strip() for u in args.upstreams.split(",")}
            if "replica" in wanted:
                gateway = lab.gateway(replica.url)
                boundary = lab.boundary(replica.url)
                nginx = lab.nginx_proxy(replica.url)
                targets = [
                    Target("direct", replica.url, [replica]),
                    Target("ic-gateway", gateway.url, [gateway, replica]),
                    Target("ic-boundary", boundary.url, [boundary, replica]),
                    Target("nginx", nginx.url, [nginx, replica]),
                ]
                results += measure_set("replica", targets, routes, args, tools["wrk"], script)
                if args.profile is not None:
                    profiles["replica"] = profile(
                        gateway, "replica", routes, args, tools["wrk"], script, args.profile
                    )
                children.stop(gateway.process)
                children.stop(boundary.process)
                children.stop(nginx.process)
            children.stop(replica.process)
            if "static" in wanted:
                static = lab.static_upstream(status_body, query_reply)
                gateway = lab.gateway(static.url)
                boundary = lab.boundary(static.url)
                nginx = lab.nginx_proxy(static.url)
                targets = [
                    Target("direct", static.url, [static]),
                    Target("ic-gateway", gateway.url, [gateway, static]),
                    Target("ic-boundary", boundary.url, [boundary, static]),
                    Target("nginx", nginx.url, [nginx, static]),
                ]
                results += measure_set("static", targets, routes, args, tools["wrk"], script)
                if args.profile is not None:
                    profiles["static"] = profile(
                        gateway, "static", routes, args, tools["wrk"], script, args.profile
                    )
        finally:
            lab.close()
    checks = compare(results)
    boundary_rows = boundary_against_nginx(results)
    replica_rows = replica_against_static(results)
    document = {
        "benchmark": "gateway",
        "machine_before": before,
        "machine_after": machine(),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "wrk_threads": 1,
            "server_cpus": args.server_cpus,
            "client_cpus": args.client_cpus,
            "body_bytes": len(body),
            "nginx_workers": 1,
            "tools": tools,
        },
        "results": results,
        "comparison": checks,
        "boundary_against_nginx": boundary_rows,
        "replica_against_static_nginx": replica_rows,
        "profiles": profiles,
    }
    tables = [
        _results_table(results),
        _compare_table(checks),
        _boundary_table(boundary_rows),
        _replica_table(replica_rows),
    ]
    emit(document, tables, args.json_out)


def _results_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="wrk results (medians over rounds)")
    for column in ("upstream", "route", "target", "req/s", "p50", "p99", "errors", "CPU/request"):
        table.add_column(column, justify="right")
    for r in results:
        cpu = ", ".join(f"{k} {v:.3f} ms" for k, v in r["cpu_ms_per_request"].items())
        table.add_row(
            r["upstream"],
            r["route"],
            r["target"],
            f"{r['rps']:.0f}",
            f"{r['p50_ms']:.2f} ms",
            f"{r['p99_ms']:.2f} ms",
            str(r["errors"]),
            cpu,
        )
    return table


def _boundary_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="ic-boundary against nginx (no target)")
    for column in ("upstream", "route", "req/s ratio", "p99 ratio", "CPU/request"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["upstream"],
            r["route"],
            f"{r['throughput_ratio']:.2f}",
            f"{r['p99_ratio']:.2f}",
            f"{r['boundary_cpu_ms_per_request']:.3f} ms",
        )
    return table


def _replica_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="the replica stub against nginx serving the same answers, direct")
    for column in ("route", "replica req/s", "nginx req/s", "ratio", "CPU/request"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["route"],
            f"{r['replica_rps']:.0f}",
            f"{r['static_nginx_rps']:.0f}",
            f"{r['ratio']:.2f}",
            f"replica {r['replica_cpu_ms_per_request']:.3f} ms, "
            f"nginx {r['static_nginx_cpu_ms_per_request']:.3f} ms",
        )
    return table


def _compare_table(checks: list[dict[str, Any]]) -> Table:
    table = Table(
        title="ic-gateway against nginx (targets: req/s >= 0.8x through the replica, >= 0.5x "
        "against the static upstream; p99 <= 1.5x through the replica)"
    )
    for column in ("upstream", "route", "req/s ratio", "", "p99 ratio", "", "upstream-bound"):
        table.add_column(column, justify="right")
    for c in checks:
        table.add_row(
            c["upstream"],
            c["route"],
            f"{c['throughput_ratio']:.2f}",
            verdict(c["throughput_met"]),
            f"{c['p99_ratio']:.2f}",
            "no target" if c["p99_met"] is None else verdict(c["p99_met"]),
            "both" if c["upstream_is_bottleneck_for_both"] else "no",
        )
    return table


if __name__ == "__main__":
    main()
