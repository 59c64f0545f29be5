"""The `harness` command: bring testnets up (in the foreground, once, or detached), list them,
read their nodes' logs, remove them, and build the node image.

Exit status: 0 on success, 1 on an error (the message says what), 2 on a usage error, 130 when
interrupted with Ctrl-C (143 with SIGTERM), as shells expect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from harness.driver import (
    SPAWN_MODES,
    BackendOptions,
    HarnessError,
    InternetComputer,
    Run,
    Subnet,
    SubnetType,
    Testnet,
    backend_names,
    sweep,
)
from harness.driver.aio import NodeHealth, probe_nodes
from harness.driver.backend_registry import get_backend
from harness.driver.lifetime import describe_duration, parse_duration, set_lifetime
from harness.driver.listing import testnet_lines
from harness.driver.prometheus import require_support as require_prometheus_support
from harness.driver.replay import Replay
from harness.driver.report_worker import serve_reports
from harness.driver.testnets import TestnetEntry, find_testnet, remove_testnet, testnets

log = logging.getLogger("harness.cli")

RECORD_REFRESH_INTERVAL = 10.0


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


def _replay(args: argparse.Namespace) -> Replay | None:
    """What `--from` brings back, if given (`harness.driver.replay`)."""
    if args.from_artifacts is None:
        return None
    if args.topology:
        raise HarnessError("harness up: --from brings the artifacts' topology back: no --topology")
    return Replay.load(Path(args.from_artifacts))


def _topology(args: argparse.Namespace, replay: Replay | None = None) -> InternetComputer:
    if replay is not None:
        topology = replay.topology
    else:
        topology = load_topology(args.topology) if args.topology else default_topology()
    if args.enable_ic_gateway:
        for subnet in topology.subnets:
            if subnet.subnet_type == SubnetType.CLOUD_ENGINE:
                subnet.with_ic_gateway()
    if args.prometheus:
        topology.with_prometheus()
    topology.validate()
    return topology


def print_testnet(document: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(document, indent=2), flush=True)
    else:
        print("\n".join(testnet_lines(document)), flush=True)


# harness up
class _Stop(BaseException):
    """A signal asked `harness up` to tear its testnet down (a BaseException, as
    KeyboardInterrupt is: nothing may take it for a failure of the start)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM raise `_Stop` (once): the testnet is torn down, the exit status says
    which signal came."""
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopped.is_set():
            stopped.set()
            raise _Stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


Report = Callable[[str, int, int], None]


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[Report]:
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

        yield report


def _console() -> Console:
    """Messages on stderr, never wrapped at the console's width (a pipe's is 80): a terminal
    wraps long lines itself, and a log keeps them whole."""
    return Console(stderr=True, soft_wrap=True)


def cmd_up(args: argparse.Namespace) -> int:
    if args.detach:
        return _up_detached(args)
    events: IO[str] | None = os.fdopen(args.report_fd, "w", buffering=1) if args.report_fd else None
    console = _console()

    def send(**event: object) -> None:
        if events is not None:
            with contextlib.suppress(OSError):  # the detaching `harness up` may be gone
                events.write(json.dumps(event) + "\n")

    try:
        return _up(args, console, send, detached=events is not None)
    except _Stop as stop:
        send(error=f"stopped by {stop}")
        return 128 + stop.signum
    except HarnessError as exc:
        send(error=_message(exc))
        raise
    except Exception:
        send(error=traceback.format_exc())
        raise
    finally:
        if events is not None:
            with contextlib.suppress(OSError):
                events.close()


def _message(exc: BaseException) -> str:
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


def _up(
    args: argparse.Namespace, console: Console, send: Callable[..., None], detached: bool
) -> int:
    with _stop_on_signals() as stopped:
        replay = _replay(args)
        topology = _topology(args, replay)
        if topology.prometheus:  # refused before an image is built for nothing
            require_prometheus_support(get_backend(args.backend))
        if not detached:  # before the progress display, so the two do not interleave
            get_backend(args.backend).prepare(console)
        sweep()
        run = Run.create("harness up --detach" if detached else "harness up")
        try:
            if detached:
                _log_to(run.directory / "harness-up.log")
            testnet = Testnet(topology, run, args.backend, BackendOptions(spawn=args.spawn))
            failure_artifacts = Path(args.artifacts_dir) / testnet.testnet_id
            if replay is not None:
                replay.prepare(testnet)
            if detached:

                def report_event(what: str, done: int, total: int) -> None:
                    send(progress=what, done=done, total=total)

                testnet.start(args.timeout, report_event, failure_artifacts)
            else:
                with _progress(console) as report:
                    testnet.start(args.timeout, report, failure_artifacts)
            with testnet:
                brought = replay.apply(testnet, args.timeout) + replay.lost if replay else []
                document = testnet.describe()
                if brought:
                    document["replay"] = brought
                if args.ttl is not None:
                    document["expires"] = set_lifetime(run, testnet.testnet_id, args.ttl)
                send(up=document)
                if not detached:
                    print_testnet(document, args.json)
                    _print_replay(console, document)
                    console.print(
                        f"[green]every node is healthy[/green] ({len(testnet.nodes())} nodes)"
                    )
                if args.once:
                    return 0
                if not detached:
                    console.print(
                        f"up; Ctrl-C (or SIGTERM) tears it down; from elsewhere: harness ls, "
                        f"harness logs {testnet.testnet_id} NODE, harness down {testnet.testnet_id}"
                    )
                # Beside it, a warm renderer for the reports of the sessions attached to it.
                with serve_reports(testnet.directory, run.run_tags()):
                    while not stopped.wait(RECORD_REFRESH_INTERVAL):
                        _refresh(testnet)
                return 0  # unreachable: only a signal ends the wait, and it raises
        except _Stop:
            console.print("tearing down")
            raise
        finally:
            run.close()


def _print_replay(console: Console, document: Mapping[str, Any]) -> None:
    for line in document.get("replay", []):
        console.print(line, markup=False)


def _refresh(testnet: Testnet) -> None:
    """Rewrite the testnet's record for `harness ls` (a restarted docker node gets new host
    ports), after taking back what a session attached to it changed (`Testnet.refresh`); a
    failure is logged, never a reason to take the testnet down."""
    try:
        testnet.refresh()
    except Exception as exc:
        log.warning("could not refresh the record of testnet %s: %s", testnet.testnet_id, exc)


def _log_to(path: Path) -> None:
    """The detached `harness up` has no terminal: its stderr and log go to the run's directory."""
    stream = path.open("a", buffering=1)
    os.dup2(stream.fileno(), 2)
    os.dup2(stream.fileno(), 1)


def _up_detached(args: argparse.Namespace) -> int:
    """Start `harness up` in a session of its own, show its progress, print the testnet once it
    is healthy and return, leaving it up. Ctrl-C before that tears it down again."""
    console = _console()
    if _topology(args, _replay(args)).prometheus:  # a bad topology is refused here
        require_prometheus_support(get_backend(args.backend))
    get_backend(args.backend).prepare(console)
    argv = [arg for arg in args.argv if arg not in ("--detach", "-d")]
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *argv, "--report-fd", str(write_end)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(write_end,),
        start_new_session=True,
    )
    os.close(write_end)
    document: dict[str, Any] | None = None
    error = ""
    try:
        with os.fdopen(read_end) as events, _progress(console) as report:
            for line in events:
                event = json.loads(line)
                if "progress" in event:
                    report(event["progress"], event["done"], event["total"])
                elif "up" in event:
                    document = event["up"]
                    break
                elif "error" in event:
                    error = event["error"]
    except KeyboardInterrupt:
        console.print("tearing down")
        process.terminate()
        process.wait()
        return 130
    if document is None:
        code = process.wait()
        raise HarnessError(error or f"the detached harness up exited with status {code}")
    print_testnet(document, args.json)
    _print_replay(console, document)
    testnet_id = document["testnet"]
    until = document.get("expires")
    lifetime = f", removed in {describe_duration(until - time.time())}" if until else ""
    console.print(
        f"[green]every node is healthy[/green] ({len(document['nodes'])} nodes); left up "
        f"(pid {process.pid}{lifetime}): harness ls, harness logs {testnet_id} NODE, "
        f"harness down {testnet_id}"
    )
    return 0


# harness ls
def _health(entries: list[TestnetEntry]) -> dict[str, list[NodeHealth]]:
    async def probe_all() -> list[list[NodeHealth]]:
        return list(
            await asyncio.gather(
                *(probe_nodes(e.nodes, e.record.get("proxy"), timeout=3.0) for e in entries)
            )
        )

    return dict(zip((e.testnet_id for e in entries), asyncio.run(probe_all()), strict=True))


def cmd_ls(args: argparse.Namespace) -> int:
    entries = testnets()
    health = _health(entries)
    if args.json:
        listing = [
            {
                "testnet": e.testnet_id,
                "backend": e.backend_name,
                "state": e.state,
                "held_by": e.held_by(),
                "owner_pid": e.owner.pid if e.owner else None,
                "kept": e.kept,
                "expires": e.expires,
                "directory": str(e.directory),
                "proxy": e.record.get("proxy"),
                "prometheus": e.record.get("prometheus"),
                "nodes": [
                    {**node, "healthy": h.healthy, "health": h.detail}
                    for node, h in zip(e.nodes, health[e.testnet_id], strict=True)
                ],
            }
            for e in entries
        ]
        print(json.dumps(listing, indent=2))
        return 0
    if not entries:
        print("no testnets (harness up --detach starts one that stays up)")
        return 0
    rows = [("TESTNET", "BACKEND", "HEALTH", "EXPIRES", "HELD BY")]
    for e in entries:
        probes = health[e.testnet_id]
        if e.state != "up":
            state = e.state
        else:
            state = f"{sum(h.healthy for h in probes)}/{len(probes)} nodes healthy"
        rows.append((e.testnet_id, e.backend_name, state, _expiry(e.expires), e.held_by()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))
    unhealthy = [
        f"  {e.testnet_id} {h.node_id}: {h.detail}"
        for e in entries
        for h in health[e.testnet_id]
        if not h.healthy
    ]
    if unhealthy:
        print("\nnot healthy now:\n" + "\n".join(unhealthy))
    return 0


def _expiry(until: float | None) -> str:
    if until is None:
        return "never"
    left = until - time.time()
    return f"in {describe_duration(left)}" if left > 0 else "now"


# harness logs
def cmd_logs(args: argparse.Namespace) -> int:
    entry = find_testnet(args.testnet)
    known = [node["id"] for node in entry.nodes] or sorted(
        path.name for path in (entry.directory / "nodes").glob("*") if path.is_dir()
    )
    if args.node not in known:
        raise HarnessError(
            f"testnet {entry.testnet_id} has no node {args.node!r}; nodes: {', '.join(known)}"
        )
    out = sys.stdout.buffer
    try:
        for chunk in entry.backend().read_log(args.node, args.process, args.follow):
            out.write(chunk)
            out.flush()
    except BrokenPipeError:  # `harness logs ... | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# harness down
def cmd_down(args: argparse.Namespace) -> int:
    if args.testnets:
        if args.all:
            raise HarnessError("harness down: name testnets or give --all, not both")
        for testnet_id in args.testnets:
            print(remove_testnet(find_testnet(testnet_id), force=args.force))
        return 0
    removed = sweep(everything=args.all, every_backend=True)
    total = sum(removed.values())
    what = "every run" if args.all else "runs whose owner is gone"
    print(f"removed {total} leftover(s) of {len(removed)} run(s) ({what})")
    return 0


# harness images
def cmd_images_build(args: argparse.Namespace) -> int:
    from harness.driver.backends.images import build_node_image

    print(build_node_image(console=_console()))
    return 0


def cmd_images_push(args: argparse.Namespace) -> int:
    from harness.driver.backends.images import push_node_image

    print(push_node_image(args.registry, console=_console()))
    return 0


class _Formatter(argparse.HelpFormatter):
    """Help with every option's default (where it has one worth saying: not for flags and
    options that are off unless given); descriptions wrapped to the terminal, except lines that
    start with a space (examples) or end with a colon (headings), which stay as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        prose: list[str] = []

        def flush() -> None:
            if prose:
                lines.append(
                    textwrap.fill(
                        " ".join(prose), width, initial_indent=indent, subsequent_indent=indent
                    )
                )
                prose.clear()

        for line in text.splitlines():
            if line.startswith(" ") or line.endswith(":") or not line.strip():
                flush()
                lines.append(indent + line)
            else:
                prose.append(line.strip())
        flush()
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def _duration(text: str) -> float | None:
    try:
        return parse_duration(text, "--ttl")
    except HarnessError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    try:
        return importlib.metadata.version("harness")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="harness",
        description=__doc__,
        formatter_class=_Formatter,
        epilog="examples:\n"
        "  harness up --once                 bring the default testnet up, check it, tear down\n"
        "  harness up --detach --backend docker\n"
        "  harness ls\n"
        "  harness logs ic-0 subnet-1-node-0 --process ic-gateway -f\n"
        "  harness down ic-0",
    )
    top.add_argument("--version", action="version", version=f"harness {_version()}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            formatter_class=_Formatter,
            epilog=f"example:\n  {example}",
        )

    up = command(
        "up",
        "bring up a testnet and wait until every node is healthy; keep it up until Ctrl-C "
        "(or --once: tear it down at once; --detach: return and leave it up)",
        "harness up --topology systests/net.py:topology --backend docker --detach",
    )
    up.add_argument("--backend", default="local", choices=backend_names(), help="what runs nodes")
    up.add_argument(
        "--topology",
        help="FILE.py[:NAME] or MODULE[:NAME] of an InternetComputer, or of a function returning "
        "one (NAME defaults to `topology`); default: a 1-node system subnet, a 4-node "
        "cloud-engine subnet with ic-gateway and an API boundary node",
    )
    up.add_argument(
        "--from",
        dest="from_artifacts",
        metavar="ARTIFACTS",
        help="bring back the testnet of a test's artifacts (artifacts/<test>/<testnet id>, from "
        "CI say): its topology, its registry's last version and, where they hold one, what its "
        "Prometheus scraped; on any backend",
    )
    up.add_argument(
        "--enable-ic-gateway",
        action="store_true",
        help="turn the ic-gateway launch gate on for every cloud-engine subnet",
    )
    up.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a Prometheus (Debian's prometheus) scraping every metrics endpoint of "
        "every node, its targets following the registry; its URL is printed (JSON: "
        '"prometheus"); on docker and swarm in a container beside the nodes',
    )
    up.add_argument("--json", action="store_true", help="print the testnet as one JSON document")
    mode = up.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="check health, then tear down at once")
    mode.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="return once healthy and leave the testnet up (harness down TESTNET removes it)",
    )
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health")
    up.add_argument(
        "--ttl",
        type=_duration,
        help="remove the testnet this long after it is up (30m, 2h, 1d; 0: never), even when "
        "no harness command runs; a pytest session attached to it (--testnet) renews it "
        "(default: lives until harness down)",
    )
    up.add_argument(
        "--spawn",
        choices=SPAWN_MODES,
        default="fork",
        help="how node programs start: forked by a fork server that imported them, or exec'd "
        "(each a fresh interpreter)",
    )
    up.add_argument(
        "--artifacts-dir",
        default="artifacts",
        help="where a failed start leaves its nodes' logs, registry and metrics "
        "(in a folder named after the testnet)",
    )
    up.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    ls = command("ls", "list the testnets on this machine, with their health now", "harness ls")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(func=cmd_ls)

    logs = command(
        "logs",
        "print a log of a node's program",
        "harness logs ic-0 subnet-1-node-0 --process replica --follow",
    )
    logs.add_argument("testnet", help="the testnet's id (see harness ls)")
    logs.add_argument("node", help="the node's id (see harness up or harness ls --json)")
    logs.add_argument(
        "--process",
        default="orchestrator",
        help="the program: orchestrator, replica, ic-gateway or ic-boundary",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing what is appended, until Ctrl-C"
    )
    logs.set_defaults(func=cmd_logs)

    down = command(
        "down",
        "remove testnets: those named, or (without names) what runs that are gone left behind",
        "harness down ic-0",
    )
    down.add_argument("testnets", nargs="*", metavar="TESTNET", help="ids of testnets to remove")
    down.add_argument(
        "--all", action="store_true", help="remove every run's testnets, live and kept ones too"
    )
    down.add_argument(
        "--force",
        action="store_true",
        help="also remove a named testnet that a running pytest session holds",
    )
    down.set_defaults(func=cmd_down)

    images = command(
        "images", "the node image of the docker and swarm backends", "harness images build"
    )
    image_commands = images.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser(
        "build",
        help="build the node image offline (no-op when it is up to date); print its tag",
        description="build the node image offline (no-op when it is up to date); print its tag",
        formatter_class=_Formatter,
        epilog="example:\n  harness images build",
    )
    build.set_defaults(func=cmd_images_build)
    push_help = (
        "build the node image if needed and push it to a registry every swarm machine pulls "
        "from; print its reference (HARNESS_IMAGE_REGISTRY=REGISTRY makes the swarm backend "
        "push and use it)"
    )
    push = image_commands.add_parser(
        "push",
        help=push_help,
        description=push_help,
        formatter_class=_Formatter,
        epilog="example:\n  harness images push 10.0.0.5:5000",
    )
    push.add_argument("registry", help="HOST:PORT of the registry, e.g. 10.0.0.5:5000")
    push.set_defaults(func=cmd_images_push)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(arguments)
    args.argv = arguments
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except HarnessError as exc:
        print(f"harness: {_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
