"""The `harness` command: bring a testnet up (`harness up`) and clean up (`harness down`)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from harness.driver import (
    HarnessError,
    InternetComputer,
    Run,
    Subnet,
    SubnetType,
    Testnet,
    backend_names,
    sweep,
)


def default_topology() -> InternetComputer:
    """A 1-node system subnet, a 4-node cloud engine with ic-gateway, one API boundary node."""
    return (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(4).with_ic_gateway())
        .with_api_boundary_nodes(1)
    )


def load_topology(spec: str) -> InternetComputer:
    """`path/to/file.py[:name]` or `package.module[:name]`; `name` (default `topology`) is an
    InternetComputer or a function returning one."""
    target, _, name = spec.partition(":")
    name = name or "topology"
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise HarnessError(f"--topology {spec}: no such file {path}")
        module_spec = importlib.util.spec_from_file_location("harness_user_topology", path)
        if module_spec is None or module_spec.loader is None:
            raise HarnessError(f"--topology {spec}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise HarnessError(f"--topology {spec}: cannot import {target}: {exc}") from exc
    value = getattr(module, name, None)
    if callable(value) and not isinstance(value, InternetComputer):
        try:
            value = value()
        except HarnessError:
            raise
        except Exception as exc:
            raise HarnessError(f"--topology {spec}: calling {name}() failed: {exc!r}") from exc
    if not isinstance(value, InternetComputer):
        raise HarnessError(
            f"--topology {spec}: {name!r} is not an InternetComputer (or a function returning one)"
        )
    return value


def _nodes_table(testnet: Testnet) -> Table:
    table = Table(title=f"testnet {testnet.testnet_id} ({testnet.backend.name} backend)")
    for column in ("node", "role", "subnet", "type", "address", "urls"):
        table.add_column(column)
    for node in testnet.describe()["nodes"]:  # type: ignore[attr-defined]
        urls = "\n".join(f"{k}: {v}" for k, v in node["urls"].items())
        table.add_row(
            node["id"],
            node["role"],
            node["subnet"] or "-",
            node["subnet_type"] or "-",
            node["address"],
            urls,
        )
    return table


def cmd_up(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    topology = load_topology(args.topology) if args.topology else default_topology()
    if args.enable_ic_gateway:
        for subnet in topology.subnets:
            if subnet.subnet_type == SubnetType.CLOUD_ENGINE:
                subnet.with_ic_gateway()
    topology.validate()
    if args.backend == "docker":
        build_images(console)  # before the progress display, so the two do not interleave
    sweep()
    run = Run.create()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            tasks: dict[str, TaskID] = {}

            def report(what: str, done: int, total: int) -> None:
                if what not in tasks:
                    tasks[what] = progress.add_task(what, total=total)
                progress.update(tasks[what], completed=done)

            testnet = Testnet(topology, run, args.backend).start(args.timeout, report)
        with testnet:
            if args.json:
                print(json.dumps(testnet.describe(), indent=2))
            else:
                Console().print(_nodes_table(testnet))
            console.print(f"[green]every node is healthy[/green] ({len(testnet.nodes())} nodes)")
            if testnet.backend.http_proxy is not None:
                proxy = testnet.backend.http_proxy.removeprefix("socks5://")
                console.print(
                    f"the URLs are reachable through the SOCKS5 proxy {proxy}, e.g. "
                    f"curl --socks5-hostname {proxy} <url>"
                )
            if args.once:
                return 0
            console.print("up; press Ctrl-C (or send SIGTERM) to tear it down")
            stop.wait()
    except KeyboardInterrupt:
        console.print("tearing down")
    finally:
        run.close()
    return 0


def build_images(console: Console) -> str:
    from harness.driver.images import build_node_image

    return build_node_image(console=console)


def cmd_images_build(args: argparse.Namespace) -> int:
    tag = build_images(Console(stderr=True))
    print(tag)
    return 0


def cmd_images_push(args: argparse.Namespace) -> int:
    from harness.driver.images import push_node_image

    print(push_node_image(args.registry, console=Console(stderr=True)))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    killed = sweep(everything=args.all)
    total = sum(killed.values())
    what = "every run" if args.all else "runs whose owner is gone"
    print(f"removed {total} process(es) of {len(killed)} run(s) ({what})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="bring up a testnet and wait until every node is healthy")
    up.add_argument("--backend", default="local", choices=backend_names())
    up.add_argument("--topology", help="FILE.py[:name] or module[:name] of an InternetComputer")
    up.add_argument(
        "--enable-ic-gateway",
        action="store_true",
        help="turn the ic-gateway launch gate on for every cloud-engine subnet",
    )
    up.add_argument("--json", action="store_true", help="print the testnet as one JSON document")
    up.add_argument("--once", action="store_true", help="check health, then tear down at once")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health")
    up.set_defaults(func=cmd_up)
    down = commands.add_parser("down", help="remove what earlier runs left behind")
    down.add_argument("--all", action="store_true", help="also runs whose owner is still alive")
    down.set_defaults(func=cmd_down)
    images = commands.add_parser("images", help="the node image of the docker and swarm backends")
    image_commands = images.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser(
        "build", help="build the node image offline (no-op when it is up to date); print its tag"
    )
    build.set_defaults(func=cmd_images_build)
    push = image_commands.add_parser(
        "push",
        help="build the node image if needed and push it to a registry every swarm machine "
        "pulls from; print its reference (HARNESS_IMAGE_REGISTRY=REGISTRY makes the swarm "
        "backend push and use it)",
    )
    push.add_argument("registry", help="HOST:PORT of the registry, e.g. 10.0.0.5:5000")
    push.set_defaults(func=cmd_images_push)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except HarnessError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
