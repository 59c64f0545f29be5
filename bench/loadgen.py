"""The driver's load generator against httpx's, on one testnet: does `testnet.aio.load` measure
the gateways, or itself? (Issue 23: a docker load test at 40 requests/s, p50 0.5 s, under CI.)

    .venv/bin/python bench/loadgen.py [--backend docker] [--rounds 5] [--busy 0,4]

The default testnet's shape for load (a 1-node system subnet, a 4-node cloud-engine subnet with
ic-gateway) comes up once; then, for each number of busy processes (`--busy`: pure-Python
loops beside the run, what other xdist workers are to a CI test on 2 cores), the same load is
sent `--rounds` times by each client, alternated: `testnet.aio.load` (aiohttp, what the driver
uses) and an `httpx.AsyncClient` with the same concurrency (what it used before issue 23),
`--requests` per gateway, 8 at a time per gateway, GET /api/v2/status with Host gateway.icp.
Reported per client: requests/s, p50 and p99 of the rounds' latencies (all rounds pooled), and
the ratio driver/httpx of requests/s. The busy processes are stopped after each row, and the
testnet is torn down, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    PYTHON,
    Children,
    console,
    distribution,
    emit,
    fmt_ms,
    machine,
    quiet_logging,
    stop_on_sigterm,
)
from rich.table import Table

from harness.driver import IC_GATEWAY_DOMAIN, InternetComputer, Run, Subnet, SubnetType, Testnet

BUSY_SECONDS = 600  # a busy loop's own bound, should this process die without stopping it
CONCURRENCY = 8


def topology() -> InternetComputer:
    return (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(4).with_ic_gateway())
    )


async def httpx_load(urls: list[str], requests: int) -> tuple[float, list[float], int]:
    """The load as the driver sent it before: one httpx.AsyncClient, 8 at a time per gateway."""
    latencies: list[float] = []
    failed = 0
    limits = httpx.Limits(
        max_connections=CONCURRENCY * len(urls), max_keepalive_connections=CONCURRENCY * len(urls)
    )
    async with httpx.AsyncClient(trust_env=False, timeout=5.0, limits=limits) as client:

        async def worker(url: str, share: int) -> None:
            nonlocal failed
            for _ in range(share):
                started = time.perf_counter()
                response = await client.get(url, headers={"host": IC_GATEWAY_DOMAIN})
                latencies.append(time.perf_counter() - started)
                failed += response.status_code != 200

        shares = [
            requests // CONCURRENCY + (i < requests % CONCURRENCY) for i in range(CONCURRENCY)
        ]
        started = time.perf_counter()
        await asyncio.gather(
            *(worker(url + "/api/v2/status", s) for url in urls for s in shares if s)
        )
        return time.perf_counter() - started, latencies, failed


def summary(rounds: list[tuple[float, list[float], int]]) -> dict[str, Any]:
    seconds = sum(r[0] for r in rounds)
    latencies = [x for r in rounds for x in r[1]]
    return {
        "requests_per_second": len(latencies) / seconds if seconds else 0.0,
        "failed": sum(r[2] for r in rounds),
        "latency_s": distribution(latencies),
    }


def measure(testnet: Testnet, rounds: int, requests: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = testnet.describe()["nodes"]  # type: ignore[assignment]
    urls = [n["urls"]["gateway"] for n in nodes if "gateway" in n["urls"]]
    driver: list[tuple[float, list[float], int]] = []
    plain: list[tuple[float, list[float], int]] = []
    for _ in range(rounds):
        report = asyncio.run(testnet.aio.load(requests=requests, concurrency=CONCURRENCY))
        latencies = [x for g in report.gateways for x in g.latencies]
        driver.append((report.seconds, latencies, report.failed))
        plain.append(asyncio.run(httpx_load(urls, requests)))
    result = {"driver (aiohttp)": summary(driver), "httpx.AsyncClient": summary(plain)}
    ratio = (
        result["driver (aiohttp)"]["requests_per_second"]
        / result["httpx.AsyncClient"]["requests_per_second"]
    )
    return {"clients": result, "ratio_driver_over_httpx": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="docker")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="per gateway and round")
    parser.add_argument("--busy", default="0,4", help="numbers of busy processes, one row each")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    busy_counts = [int(n) for n in args.busy.split(",")]
    stop_on_sigterm()
    document: dict[str, Any] = {"benchmark": "loadgen", "backend": args.backend, "rows": []}
    document["machine_before"] = machine()
    run = Run.create("bench/loadgen.py")
    try:
        with quiet_logging(), Testnet(topology(), run, backend=args.backend).start(90) as testnet:
            asyncio.run(testnet.aio.await_all_healthy())
            for busy in busy_counts:
                console.print(f"{busy} busy process(es): {args.rounds} round(s) per client")
                with Children() as children:
                    loop = f"import time\nend = time.time() + {BUSY_SECONDS}\n"
                    loop += "while time.time() < end: pass"
                    for _ in range(busy):
                        children.start([PYTHON, "-c", loop])
                    row = measure(testnet, args.rounds, args.requests)
                document["rows"].append({"busy_processes": busy, **row})
    finally:
        run.close()
    document["machine_after"] = machine()
    table = Table(title=f"load through 4 gateways, {args.backend}: the driver's client vs httpx")
    for column in ("busy", "client", "req/s", "p50", "p99", "failed", "driver/httpx"):
        table.add_column(column, justify="right")
    for row in document["rows"]:
        for name, figures in row["clients"].items():
            latency = figures["latency_s"]
            table.add_row(
                str(row["busy_processes"]),
                name,
                f"{figures['requests_per_second']:.0f}",
                fmt_ms(latency.get("p50")),
                fmt_ms(latency.get("p99")),
                str(figures["failed"]),
                f"{row['ratio_driver_over_httpx']:.2f}x" if name.startswith("driver") else "",
            )
    emit(document, [table], args.json_out)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
