"""Reports rendered in a process of their own (`harness.driver.report_worker`): written, a page
saying why in place of one that failed to render or whose renderer died, Ctrl-C to the session
not ending it, and nothing left when the session's process dies; a testnet's renderer serving
the sessions attached to it one after another, and a session falling back to its own when the
testnet's is not there or goes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from harness.driver.report import REPORT_FILE, ReportPage
from harness.driver.report_worker import RENDERER_SOCKET, ReportWriter, _Own, serve_reports
from harness.driver.sampler import Sample
from harness.driver.timeline import Event
from harness.driver.waits import wait_until


def _page(nodeid: str = "t::x", series: str = "up", value: object = 1.0) -> ReportPage:
    samples = [Sample(t, "node-a", series, value) for t in (0.2, 0.6)]  # type: ignore[arg-type]
    events = [Event(0.1, "fault", "partitioned", "node-a"), Event(0.5, "heal", "healed", "node-a")]
    return ReportPage(nodeid, "passed", 1.0, 0.0, 1.0, events, samples, links=[("log", "x.log")])


def _renderer(writer: ReportWriter) -> psutil.Process:
    """The session's own renderer of `writer`."""
    renderer = writer._renderer
    assert isinstance(renderer, _Own)
    return psutil.Process(renderer.process.pid)


def test_reports_are_rendered_by_another_process(tmp_path: Path) -> None:
    writer = ReportWriter()
    writer.submit(tmp_path / "a", _page("t::a"))
    writer.submit(tmp_path / "b", _page("t::b", "program_starts"))
    renderer = _renderer(writer)
    assert renderer.pid != os.getpid()
    written = writer.close()
    assert written == [tmp_path / "a" / REPORT_FILE, tmp_path / "b" / REPORT_FILE]
    first, second = (path.read_text() for path in written)
    assert "<h1>t::a</h1>" in first and "data-series='up'" in first and "partitioned" in first
    assert "<h1>t::b</h1>" in second and "data-series='program_starts'" in second
    assert not renderer.is_running()
    assert not list(tmp_path.rglob("*.partial"))


def test_a_page_that_fails_to_render_says_why_and_the_next_is_rendered(tmp_path: Path) -> None:
    writer = ReportWriter()
    # A rate of a series whose values are not numbers: the renderer's plot raises.
    writer.submit(tmp_path / "bad", _page("t::bad", "gateway_requests", "not a number"))
    writer.submit(tmp_path / "good", _page("t::good"))
    bad, good = writer.close()
    assert "report failed" in bad.read_text() and "TypeError" in bad.read_text()
    assert "<h1>t::good</h1>" in good.read_text()


def test_a_renderer_that_dies_leaves_a_page_naming_its_exit(tmp_path: Path) -> None:
    writer = ReportWriter()
    writer.start()
    _renderer(writer).kill()
    _renderer(writer).wait(10)
    writer.submit(tmp_path / "lost", _page())
    (lost,) = writer.close()
    text = lost.read_text()
    assert "report failed" in text
    assert "exited with -9" in text or "could not be handed to its renderer" in text


def test_ctrl_c_to_the_session_s_process_group_leaves_the_renderer_be(tmp_path: Path) -> None:
    """Ctrl-C goes to the session's whole process group; the session, interrupted, still has
    the report of the test it interrupted written: its renderer is not in that group."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from harness.driver.report import ReportPage\n"
        "from harness.driver.report_worker import ReportWriter\n"
        "writer = ReportWriter()\n"
        "writer.start()\n"
        "try:\n"
        "    print('started', flush=True)  # in the try: Ctrl-C may come right after it\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    page = ReportPage('t::interrupted', 'interrupted', 1.0, 0.0, 1.0, [], [])\n"
        "    writer.submit(Path(sys.argv[1]), page)\n"
        "    print(writer.close()[0], flush=True)\n"
    )
    session = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "interrupted")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert session.stdout is not None
        assert session.stdout.readline().strip() == "started"
        os.killpg(session.pid, signal.SIGINT)
        written = Path(session.stdout.readline().strip())
        assert session.wait(60) == 0
    finally:
        session.kill()
        session.wait()
    assert "<h1>t::interrupted</h1>" in written.read_text()


def test_a_renderer_given_nothing_is_ended_at_once() -> None:
    writer = ReportWriter()
    writer.start()
    renderer = _renderer(writer)
    assert writer.close() == []
    assert not renderer.is_running()


def test_the_renderer_ends_when_the_session_s_process_dies(tmp_path: Path) -> None:
    """However the session's process ends (here SIGKILL), its renderer does not outlive it:
    its input ends, and it ends at once, even in the middle of a report (here one that takes
    ten minutes to draw; in CI's leak stress, one killed while it warmed up was counted as
    left behind)."""
    script = (
        "import functools, json, time, types\n"
        "from pathlib import Path\n"
        "from harness.driver.report_worker import ReportWriter\n"
        "writer = ReportWriter()\n"
        "writer.start()\n"
        "slow = types.SimpleNamespace(render=functools.partial(time.sleep, 600))\n"
        f"writer._renderer.send((Path({str(tmp_path)!r}), slow))\n"
        "print(json.dumps(writer._renderer.process.pid), flush=True)\n"
        "time.sleep(600)\n"
    )
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None
        renderer = psutil.Process(json.loads(session.stdout.readline()))
        wait_until(
            lambda: True if renderer.num_threads() >= 2 else None,
            "the renderer reads its input beside its warm-up",
            30,
        )
        session.kill()
        session.wait(10)

        def gone() -> bool | None:
            return True if not renderer.is_running() or renderer.status() == "zombie" else None

        wait_until(gone, "the renderer of a killed session ends, mid-report", 30)
        assert not (tmp_path / REPORT_FILE).exists()
    finally:
        session.kill()
        session.wait()


def test_the_renderer_dies_with_the_session_even_when_it_cannot_read(tmp_path: Path) -> None:
    """The kernel kills it with its session (PR_SET_PDEATHSIG), not only its reading the end
    of its input: here it is stopped (SIGSTOP) while its session is SIGKILLed, so it could
    read nothing (in CI's leak stress, one was still starting up, or warming up, when its
    session died), and it is gone all the same, without ever running again."""
    script = (
        "import json, time\n"
        "from harness.driver.report_worker import ReportWriter\n"
        "writer = ReportWriter()\n"
        "writer.start()\n"
        "print(json.dumps(writer._renderer.process.pid), flush=True)\n"
        "time.sleep(600)\n"
    )
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    renderer: psutil.Process | None = None
    try:
        assert session.stdout is not None
        renderer = psutil.Process(json.loads(session.stdout.readline()))
        wait_until(  # past its start: it watches its input, so it has asked to die with us
            lambda: True if renderer is not None and renderer.num_threads() >= 2 else None,
            "the renderer watching its input",
            30,
        )
        renderer.suspend()
        session.kill()
        session.wait(10)

        def gone() -> bool | None:
            assert renderer is not None
            return True if not renderer.is_running() or renderer.status() == "zombie" else None

        wait_until(gone, "the stopped renderer of a killed session ends", 30)
    finally:
        session.kill()
        session.wait()
        if renderer is not None and renderer.is_running():
            renderer.kill()


@contextlib.contextmanager
def _serving(testnet_dir: Path) -> Iterator[Path]:
    """A testnet's renderer for the block, its socket answering."""
    with serve_reports(testnet_dir, {"HARNESS_TEST_TAG": "report-service"}) as path:
        wait_until(lambda: True if path.exists() else None, "the renderer's socket", 60)
        yield path


def _service() -> psutil.Process:
    (service,) = [p for p in psutil.Process().children() if "--serve" in " ".join(p.cmdline())]
    return service


def test_a_testnet_s_renderer_serves_one_session_after_another(tmp_path: Path) -> None:
    with _serving(tmp_path) as path:
        for session in ("first", "second"):
            writer = ReportWriter(service=path)
            writer.start()
            assert writer.rendered_by == "testnet"
            writer.submit(tmp_path / session, _page(f"t::{session}"))
            (written,) = writer.close()
            assert f"<h1>t::{session}</h1>" in written.read_text()
        service = _service()
        assert service.environ()["HARNESS_TEST_TAG"] == "report-service"  # swept with its run
    assert not path.exists()
    assert not service.is_running()


def test_a_session_renders_itself_when_the_testnet_s_renderer_is_not_there(
    tmp_path: Path,
) -> None:
    stale = tmp_path / RENDERER_SOCKET  # left by a renderer that died: nothing listens
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(stale))
    writer = ReportWriter(service=stale)
    writer.submit(tmp_path / "own", _page("t::own"))
    assert writer.rendered_by == "own"
    (written,) = writer.close()
    assert "<h1>t::own</h1>" in written.read_text()


def test_a_session_whose_testnet_s_renderer_goes_renders_itself(tmp_path: Path) -> None:
    with _serving(tmp_path) as path:
        writer = ReportWriter(service=path)
        writer.submit(tmp_path / "before", _page("t::before"))
        assert writer._feed is not None
        writer._feed.submit(lambda: None).result()  # the first is written
        assert writer.rendered_by == "testnet"
        service = _service()
        service.kill()
        service.wait(10)
        writer.submit(tmp_path / "after", _page("t::after"))
        before, after = writer.close()
    assert "<h1>t::before</h1>" in before.read_text()
    assert "<h1>t::after</h1>" in after.read_text()
