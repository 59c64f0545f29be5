"""Renders tests' reports in a process of its own (`python -m harness.driver.report_worker`),
so that a test's process neither imports matplotlib (0.5-0.7 s) nor draws plots under its GIL.

The test's process starts the renderer when it knows that reports will come (`start`: when its
first testnet is asked for, or as soon as it is configured to attach to one), so that the
renderer imports and warms up matplotlib (about a second) on another core before the first
report is due; one that was never given a report is killed at the end. Each report (`submit`:
a `ReportPage`) is pickled onto the renderer's standard input by a thread of the test's
process, so a test never waits on the pipe; `close` waits for every report. The renderer runs
in a session of its own, so that Ctrl-C and a SIGTERM to the test's process group do not reach
it: the test's process decides when it ends, and still has the report of an interrupted test
written. It ends at the end of its input, so also when the test's process dies, however it
dies. A report that fails to
render, or that a renderer that died never wrote, is replaced by a page saying why.
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import tempfile
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from harness.driver.report import REPORT_FILE, ReportPage, failed_page, warm_up, write_report

CLOSE_TIMEOUT = 300.0
"""How long `close` waits for the reports still to render before it ends the renderer."""


class ReportWriter:
    """The test's side: starts the renderer, hands it reports, waits for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._feed: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Path, Future[None]]] = []

    def start(self) -> None:
        """Start the renderer, unless it runs."""
        with self._lock:
            if self._process is not None:
                return
            self._errors = tempfile.TemporaryFile()  # noqa: SIM115  (closed by `close`)
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._errors,
                start_new_session=True,
            )
            self._feed = ThreadPoolExecutor(1, thread_name_prefix="report")

    def submit(self, directory: Path, page: ReportPage) -> None:
        """Have `page` rendered into `directory`."""
        self.start()
        with self._lock:
            assert self._feed is not None and self._process is not None
            sent = self._feed.submit(_send, self._process, (directory, page))
            self._pending.append((directory, sent))

    def close(self) -> list[Path]:
        """Wait for every report (a page saying why in place of any that was not rendered);
        return where they were written. The renderer ends; a later `submit` starts another."""
        with self._lock:
            process, errors, feed = self._process, self._errors, self._feed
            pending, self._pending = self._pending, []
            self._process = self._errors = self._feed = None
        why: dict[Path, str] = {}
        for directory, sent in pending:
            try:
                sent.result()
            except Exception as exc:
                why[directory] = f"the report could not be handed to its renderer: {exc!r}"
        if feed is not None:
            feed.shutdown()
        ended = ""
        if process is not None and not pending:  # nothing to wait for, not even its warm-up
            process.kill()
            process.wait()
        elif process is not None:
            ended = _end(process, errors)
        written = []
        for directory, _ in pending:
            path = directory / REPORT_FILE
            if not path.is_file():
                write_report(directory, failed_page(why.get(directory, ended)))
            written.append(path)
        return written


def _send(process: subprocess.Popen[bytes], job: tuple[Path, ReportPage] | None) -> None:
    assert process.stdin is not None
    process.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
    process.stdin.flush()


def _end(process: subprocess.Popen[bytes], errors: IO[bytes] | None) -> str:
    """Tell the renderer that no more reports come, wait for it; what went wrong, if it did
    not end well."""
    with contextlib.suppress(OSError):  # it may be gone: the reason is its exit code
        _send(process, None)
    with contextlib.suppress(OSError):
        assert process.stdin is not None
        process.stdin.close()
    try:
        code = process.wait(timeout=CLOSE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"the report renderer was still rendering after {CLOSE_TIMEOUT:.0f} s; ended"
    said = ""
    if errors is not None:
        errors.seek(0)
        said = errors.read().decode(errors="replace")[-4000:].strip()
        errors.close()
    if code == 0:
        return f"the report renderer ended without writing this report\n{said}".strip()
    return f"the report renderer exited with {code}\n{said}".strip()


def main() -> None:
    """The renderer: reports from standard input, until None or its end."""
    warm_up()
    source = sys.stdin.buffer
    while True:
        try:
            job = pickle.load(source)
        except EOFError:
            return
        if job is None:
            return
        directory, page = job
        try:
            text = page.render()
        except Exception:  # the page says why, the next report is rendered
            text = failed_page(traceback.format_exc())
        try:
            write_report(directory, text)
        except OSError as exc:
            print(f"report {directory / REPORT_FILE} not written: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
