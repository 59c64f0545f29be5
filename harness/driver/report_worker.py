"""Renders tests' reports in a process of their own (`python -m harness.driver.report_worker`),
so that a test's process neither imports matplotlib (0.5-0.7 s) nor draws plots under its GIL.

A session's `ReportWriter` hands each report (`submit`: a `ReportPage`) to a renderer from a
thread of its own, so a test never waits on it, and `close` waits for every report. A report
that fails to render, or that a renderer that died never wrote, is replaced by a page saying
why. The renderer is one of two:

- **The testnet's** (`serve_reports`): the `harness up` that keeps a testnet up runs one beside
  it, warm, listening on `renderer.sock` in the testnet's directory, for the sessions attached
  to it one after another (`ReportWriter(service=...)`): their reports are drawn as soon as they
  come, without a second of matplotlib's import each time. It ends with that `harness up` (its
  standard input ends).
- **The session's own**, started when the session knows that reports will come (`start`: when
  its first testnet is asked for, or at once with --testnet where the testnet has no renderer),
  so that it imports and warms up matplotlib (about a second) on another core before the first
  report is due; one that was never given a report is killed at the end. It runs in a session
  of its own, so that Ctrl-C and a SIGTERM to the test's process group do not reach it: the
  test's process decides when it ends, and still has the report of an interrupted test written.
  It ends when told to, or at once when its input ends untold: when the test's process dies,
  however it dies (even while it warms up). Started from the session's main thread, it is also
  SIGKILLed by the kernel the moment that thread ends (`PR_SET_PDEATHSIG`), whatever it is
  doing then, even starting or stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.driver.report import ReportPage

_PR_SET_PDEATHSIG = 1  # prctl(2)
RENDERER_SOCKET = "renderer.sock"
"""Where a testnet's renderer listens, in the testnet's directory."""
CLOSE_TIMEOUT = 300.0
"""How long `close` waits for the reports still to render before it ends the renderer."""

Job = tuple[Path, "ReportPage"]


class _Own:
    """A renderer of the session's own: a child process fed on its standard input. Started
    from the session's main thread, it also dies with that thread (`--parent`)."""

    def __init__(self) -> None:
        self.errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (closed by `end`)
        main = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, *(["--parent", str(os.getpid())] if main else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.errors,
            start_new_session=True,
        )

    def send(self, job: Job | None) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        self.process.stdin.flush()

    def end(self, given: bool) -> str:
        """Tell it that no more reports come and wait for it (kill it if it was given none:
        not even its warm-up is waited for); what went wrong, if it did not end well."""
        if not given:
            self.process.kill()
            self.process.wait()
            self.errors.close()
            return ""
        with contextlib.suppress(OSError):  # it may be gone: the reason is its exit code
            self.send(None)
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout=CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return f"the report renderer was still rendering after {CLOSE_TIMEOUT:.0f} s; ended"
        self.errors.seek(0)
        said = self.errors.read().decode(errors="replace")[-4000:].strip()
        self.errors.close()
        if code == 0:
            return f"the report renderer ended without writing this report\n{said}".strip()
        return f"the report renderer exited with {code}\n{said}".strip()


class _Service:
    """A testnet's renderer, reached on its socket: each report is acknowledged once
    written."""

    def __init__(self, path: Path) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _address(path) as address:
                self.socket.connect(address)
        except OSError:
            self.socket.close()
            raise
        self.reader = self.socket.makefile("rb")
        self.writer = self.socket.makefile("wb")

    def send(self, job: Job | None) -> None:
        pickle.dump(job, self.writer, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.flush()
        if job is not None and pickle.load(self.reader) is not True:
            raise OSError("the testnet's report renderer did not write the report")

    def end(self, given: bool) -> str:
        with contextlib.suppress(OSError):
            self.send(None)
        for stream in (self.reader, self.writer, self.socket):
            with contextlib.suppress(OSError):
                stream.close()
        return ""


class ReportWriter:
    """The session's side: hands reports to a renderer, waits for them. `service` is the
    socket of the renderer of the testnet the session is attached to, used when it answers."""

    def __init__(self, service: Path | None = None) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._renderer: _Own | _Service | None = None
        self._feed: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Path, Future[None]]] = []

    def start(self) -> None:
        """Reach the testnet's renderer, else start one of the session's own; unless done."""
        with self._lock:
            self._start()

    def _start(self) -> _Own | _Service:
        if self._renderer is None:
            self._renderer = self._reach() or _Own()
            self._feed = ThreadPoolExecutor(1, thread_name_prefix="report")
        return self._renderer

    def _reach(self) -> _Service | None:
        if self.service is None:
            return None
        try:
            return _Service(self.service)
        except OSError:  # none, or one that is gone (its socket left behind)
            return None

    @property
    def rendered_by(self) -> str:
        """Which renderer draws the reports: "testnet", "own" or "" (none yet)."""
        renderer = self._renderer
        return "" if renderer is None else "testnet" if isinstance(renderer, _Service) else "own"

    def submit(self, directory: Path, page: ReportPage) -> None:
        """Have `page` rendered into `directory`."""
        # Absolute: a testnet's renderer runs in another working directory.
        job = (
            directory.absolute(),
            dataclasses.replace(page, journals=[path.absolute() for path in page.journals]),
        )
        with self._lock:
            self._start()
            assert self._feed is not None
            self._pending.append((job[0], self._feed.submit(self._send, job)))

    def _send(self, job: Job) -> None:
        """In the feed's thread: to the renderer; when a testnet's renderer is gone, to one of
        the session's own instead."""
        renderer = self._renderer
        assert renderer is not None
        try:
            renderer.send(job)
        except (OSError, EOFError, pickle.UnpicklingError):
            if not isinstance(renderer, _Service):
                raise
            renderer.end(True)
            with self._lock:
                self._renderer = own = _Own()
            own.send(job)

    def close(self) -> list[Path]:
        """Wait for every report (a page saying why in place of any that was not rendered);
        return where they were written. A later `submit` starts again. Not meant to run beside
        a `submit` (the session calls both from the thread that runs its tests, or closes from
        its watchdog while that thread is stuck)."""
        with self._lock:
            feed, pending, self._pending = self._feed, self._pending, []
            self._feed = None
        why: dict[Path, str] = {}
        for directory, sent in pending:
            try:
                sent.result()
            except Exception as exc:
                why[directory] = f"the report could not be handed to its renderer: {exc!r}"
        if feed is not None:
            feed.shutdown()
        with self._lock:
            renderer, self._renderer = self._renderer, None
        ended = renderer.end(bool(pending)) if renderer is not None else ""
        from harness.driver.report import REPORT_FILE, failed_page, write_report

        written = []
        for directory, _ in pending:
            path = directory / REPORT_FILE
            if not path.is_file():
                write_report(directory, failed_page(why.get(directory, ended)))
            written.append(path)
        return written


@contextlib.contextmanager
def serve_reports(testnet_dir: Path, env: Mapping[str, str]) -> Iterator[Path]:
    """A renderer for the sessions that attach to the testnet in `testnet_dir`, while the
    block runs: it listens on `RENDERER_SOCKET` there once warm. `env`: what to tag it with
    (the run's tags), so that whatever removes the run ends it."""
    path = testnet_dir / RENDERER_SOCKET
    with (testnet_dir / "renderer.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--serve", str(path), "--parent", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    try:
        yield path
    finally:
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()  # it ends at the end of its input
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """An address of the Unix socket at `path` that fits in AF_UNIX's 108 bytes however deep
    `path` is (a test's state directory can be): through its directory's descriptor."""
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def _render(job: Job) -> None:
    from harness.driver.report import REPORT_FILE, failed_page, write_report

    directory, page = job
    try:
        text = page.render()
    except Exception:  # the page says why, the next report is rendered
        text = failed_page(traceback.format_exc())
    try:
        write_report(directory, text)
    except OSError as exc:
        print(f"report {directory / REPORT_FILE} not written: {exc}", file=sys.stderr, flush=True)


def _own() -> None:
    """A session's renderer: warms up, then renders the reports that come on standard input
    until None. Its input is read from the start, warm-up or not, by a thread of its own: an
    end of input without None means that the session died (SIGKILL), and then it ends at once,
    mid-report or not (nobody is left to wait for it), so it never outlives the session by
    more than a read."""
    jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()

    def read() -> None:
        source = sys.stdin.buffer
        while True:
            try:
                job: Any = pickle.load(source)
            except (EOFError, OSError, pickle.UnpicklingError):
                sys.stderr.flush()
                os._exit(0)
            jobs.put(job)
            if job is None:
                return

    threading.Thread(target=read, daemon=True, name="input").start()
    from harness.driver.report import warm_up  # the drawing's imports, once the input is watched

    warm_up()
    while (job := jobs.get()) is not None:
        _render(job)


def _serve(path: Path) -> None:
    """A testnet's renderer: one session at a time on the socket at `path`, each report
    acknowledged once written, until standard input ends (its `harness up` ended)."""

    def until_input_ends() -> None:
        while os.read(sys.stdin.fileno(), 65536):  # unbuffered: no lock held at an exit
            pass
        path.unlink(missing_ok=True)
        os._exit(0)  # mid-report or not: nobody is left to read it

    threading.Thread(target=until_input_ends, daemon=True).start()  # warming up too
    from harness.driver.report import REPORT_FILE, warm_up

    warm_up()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        path.unlink(missing_ok=True)
        with _address(path) as address:
            listener.bind(address)  # once warm: a session that finds no socket renders itself
        os.chmod(path, 0o600)
        listener.listen()
        while True:
            connection, _ = listener.accept()
            with connection, connection.makefile("rb") as reader, connection.makefile("wb") as out:
                while True:
                    try:
                        job = pickle.load(reader)
                    except (EOFError, OSError, pickle.UnpicklingError):
                        break
                    if job is None:
                        break
                    _render(job)
                    print(f"wrote {job[0] / REPORT_FILE}", flush=True)  # to renderer.log
                    pickle.dump(True, out)
                    out.flush()


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when the thread that started it ends
    (`PR_SET_PDEATHSIG`), however it ends and whatever this process is doing then (starting,
    warming up, drawing, stopped); exit now if `parent` is gone already."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not Linux: the end of its input still ends it
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=Path, metavar="SOCKET", help="a testnet's renderer")
    parser.add_argument("--parent", type=int, metavar="PID", help="die with this process")
    args = parser.parse_args(argv)
    if args.parent is not None:
        _die_with(args.parent)
    if args.serve is None:
        _own()
    else:
        _serve(args.serve)


if __name__ == "__main__":
    main()
