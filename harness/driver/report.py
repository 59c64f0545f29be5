"""A test's report (`report.html` in its artifact directory) and the session's index
(`index.html` in the artifacts root): self-contained HTML, no script and nothing fetched, that a
browser opens from disk.

A report shows the test's outcome and failure, a timeline of what happened during the test
(`harness.driver.timeline`: the driver's events and every orchestrator's) drawn as one lane
per node and listed as a table, and plots of the sampled series (`harness.driver.sampler`):
metrics endpoints answering, program starts, restart backoff, request rates, taken from the
Prometheus beside the testnet when it ran, else from the harness's sampler (the page says
which: `Testnet.metric_samples`). Plots are SVG drawn by matplotlib (its object API, so no
global backend is chosen for the caller), inlined.

`report_page` takes what a report shows in the test's process, while its testnets are up;
`ReportPage.render` draws it, in another process (`harness.driver.report_worker`).
"""

from __future__ import annotations

import html
import io
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.driver.sampler import UP_SERIES, Sample
from harness.driver.timeline import Event, orchestrator_events
from harness.node.catalog import PROGRAMS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from harness.driver.testnet import Testnet

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"

# (series, title, y label, as a rate per second): what every node answers, then the programs'
# series (`Program.series`).
PLOTS: tuple[tuple[str, str, str, bool], ...] = (
    (UP_SERIES, "Metrics endpoints answering, per node", "endpoints", False),
    *((s.series, s.title, s.unit, s.rate) for program in PROGRAMS for s in program.series),
)
_LEVEL_COLOURS = {"info": "#2b6cb0", "warning": "#d69e2e", "error": "#c53030"}
_KIND_MARKERS = {
    "registry": "s",
    "fault": "X",
    "heal": "P",
    "health": "o",
    "check": "D",
    "start": "^",
    "exit": "v",
    "backoff": "<",
    "restart": ">",
    "stop": "|",
}
_OUTCOME_COLOURS = {"passed": "#2f855a", "failed": "#c53030", "skipped": "#718096"}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1a202c; }
h1 { font-size: 1.3em; word-break: break-all; }
h2 { font-size: 1.1em; margin-top: 1.5em; }
.outcome { font-weight: bold; padding: 0.1em 0.5em; border-radius: 0.3em; color: white; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border-bottom: 1px solid #e2e8f0; padding: 0.2em 0.6em; text-align: left;
  vertical-align: top; }
td.when, td.node { white-space: nowrap; }
tr.warning td { background: #fffbea; }
tr.error td { background: #fff5f5; }
pre { background: #f7fafc; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 0.5em 0; }
figure svg { max-width: 100%; height: auto; }
.muted { color: #718096; }
"""


@dataclass(frozen=True)
class TestRecord:
    """A test as the index lists it."""

    __test__ = False  # not a pytest test class, despite its name

    nodeid: str
    outcome: str
    duration: float
    report: Path | None = None
    """Its report, if it used a testnet."""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _outcome(outcome: str) -> str:
    colour = _OUTCOME_COLOURS.get(outcome, "#4a5568")
    return f"<span class='outcome' style='background:{colour}'>{html.escape(outcome)}</span>"


def _svg(figure: Figure) -> str:
    """The figure as an SVG element to inline: no XML prolog, no doctype, stable ids."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "harness-report"}):
        # Fixed margins (`_figure`), not bbox_inches="tight": that draws everything twice.
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # matplotlib's RDF metadata (creator, format) says nothing to a reader of the report.
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)


def _figure(height: float) -> tuple[Figure, Axes]:
    """A figure 11 inches wide with room on the left for node ids and on the right for the
    legend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, height), dpi=100)
    figure.subplots_adjust(left=0.17, right=0.83, bottom=0.8 / height, top=1 - 0.45 / height)
    return figure, figure.add_subplot()


def warm_up() -> None:
    """Import matplotlib and load what its first SVG loads (fonts, the SVG backend), so that
    the first report draws as fast as the next."""
    figure, axes = _figure(1.4)
    axes.plot([0, 1], [0, 1], label="warm-up")
    axes.set_xlabel("seconds")
    axes.legend()
    _svg(figure)


def timeline_svg(events: Sequence[Event], start: float, end: float) -> str:
    """The events as markers in one lane per node (the testnet's own events in the first),
    coloured by level, shaped by kind."""
    lanes = ["testnet", *sorted({e.node for e in events if e.node})]
    row = {lane: index for index, lane in enumerate(lanes)}
    figure, axes = _figure(1.4 + 0.35 * len(lanes))
    for (kind, level), group in _grouped(events).items():
        axes.scatter(
            [e.t - start for e in group],
            [row[e.node or "testnet"] for e in group],
            marker=_KIND_MARKERS.get(kind, "o"),
            color=_LEVEL_COLOURS.get(level, "#4a5568"),
            s=60,
            label=kind,
            zorder=3,
        )
    axes.set_yticks(range(len(lanes)), lanes)
    axes.set_ylim(len(lanes) - 0.5, -0.5)
    span = max(end - start, 0.1)
    axes.set_xlim(-0.02 * span, 1.02 * span)  # room for the markers at either end
    axes.set_xlabel("seconds since the test started")
    axes.grid(axis="x", alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        axes.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1))
    return _svg(figure)


def _grouped(events: Iterable[Event]) -> dict[tuple[str, str], list[Event]]:
    groups: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        groups[(event.kind, event.level)].append(event)
    return groups


def series_svg(
    samples: Sequence[Sample], series: str, title: str, unit: str, rate: bool, start: float
) -> str | None:
    """A plot of one series, a line per node (None when nothing was sampled)."""
    by_node: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.series == series:
            by_node[sample.node].append(sample)
    if not by_node:
        return None
    figure, axes = _figure(2.8)
    drawn = 0
    for node, points in sorted(by_node.items()):
        points.sort(key=lambda s: s.t)
        if rate:
            xs = [b.t - start for b in points[1:]]
            ys = [
                max(0.0, b.value - a.value) / (b.t - a.t) if b.t > a.t else 0.0
                for a, b in itertools.pairwise(points)
            ]
        else:
            xs = [p.t - start for p in points]
            ys = [p.value for p in points]
        if xs:
            # A lone sample is a line of no length, which nothing draws: it gets a marker.
            marker = "o" if len(xs) == 1 else ""
            axes.step(xs, ys, where="post", label=node, linewidth=1.5, marker=marker, markersize=4)
            drawn += 1
    if not drawn:
        return None  # a rate needs two samples
    axes.set_title(title, fontsize=11, y=1.0)  # placed, not fitted above the ticks: 20% less
    axes.set_ylabel(unit)
    axes.set_xlabel("seconds since the test started")
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return _svg(figure)


def render_report(
    nodeid: str,
    outcome: str,
    duration: float,
    start: float,
    end: float,
    events: Sequence[Event],
    samples: Sequence[Sample],
    failure: str = "",
    links: Sequence[tuple[str, str]] = (),
    sampled_by: Sequence[str] = (),
) -> str:
    """The report page of one test (see the module's docstring); `links` are (label, relative
    path) of its artifacts, `sampled_by` says where the samples come from."""
    events = sorted((e for e in events if start <= e.t <= end), key=lambda e: e.t)
    samples = [s for s in samples if start <= s.t <= end]
    parts = [
        f"<h1>{html.escape(nodeid)}</h1>",
        f"<p>{_outcome(outcome)} in {duration:.2f} s</p>",
    ]
    if failure:
        parts.append(f"<h2>Failure</h2><pre>{html.escape(failure)}</pre>")
    if links:
        items = "".join(
            f"<li><a href='{html.escape(path)}'>{html.escape(label)}</a></li>"
            for label, path in links
        )
        parts.append(f"<h2>Artifacts</h2><ul>{items}</ul>")
    parts.append(f"<h2 id='timeline'>Timeline</h2><p class='muted'>{len(events)} events</p>")
    if events:
        parts.append(f"<figure class='timeline'>{timeline_svg(events, start, end)}</figure>")
        rows = "".join(
            f"<tr class='{html.escape(e.level)} event' data-kind='{html.escape(e.kind)}'>"
            f"<td class='when'>{e.t - start:+.3f} s</td>"
            f"<td class='node'>{html.escape(e.node or 'testnet')}</td>"
            f"<td>{html.escape(e.program or '')}</td><td>{html.escape(e.kind)}</td>"
            f"<td>{html.escape(e.text)}</td></tr>"
            for e in events
        )
        parts.append(
            "<table id='events'><tr><th>time</th><th>node</th><th>program</th><th>kind</th>"
            f"<th>what happened</th></tr>{rows}</table>"
        )
    parts.append("<h2 id='plots'>Metrics over the test</h2>")
    if sampled_by:
        parts.append(
            f"<p class='muted' id='sampled-by'>Sampled by {html.escape('; '.join(sampled_by))}</p>"
        )
    plotted = 0
    for series, title, unit, rate in PLOTS:
        svg = series_svg(samples, series, title, unit, rate, start)
        if svg is not None:
            parts.append(f"<figure class='plot' data-series='{series}'>{svg}</figure>")
            plotted += 1
    if not plotted:
        parts.append("<p class='muted'>No metrics were sampled during the test.</p>")
    return _page(f"{outcome}: {nodeid}", "".join(parts))


def write_report(directory: Path, page: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    partial = path.with_name(f".{REPORT_FILE}.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)  # a reader never sees half a page
    return path


def render_index(records: Sequence[TestRecord], root: Path) -> str:
    """The index page: every test with its outcome, duration and report (links relative to
    `root`, where the page is written)."""
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record.outcome] += 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    rows = []
    for record in records:
        if record.report is not None:
            href = html.escape(record.report.relative_to(root).as_posix())
            link = f"<a href='{href}'>report</a>"
        else:
            link = "<span class='muted'>no report</span>"
        rows.append(
            f"<tr class='test'><td>{html.escape(record.nodeid)}</td>"
            f"<td>{_outcome(record.outcome)}</td><td>{record.duration:.2f} s</td>"
            f"<td>{link}</td></tr>"
        )
    body = (
        f"<h1>Test session</h1><p>{html.escape(summary) or 'no tests'}</p>"
        "<table id='tests'><tr><th>test</th><th>outcome</th><th>duration</th><th></th></tr>"
        f"{''.join(rows)}</table>"
    )
    return _page("Test session", body)


@dataclass(frozen=True)
class Collected:
    """What a test's report needs of one testnet, taken while it was up: its artifact directory
    (as `Testnet.collect_artifacts` wrote it, with the orchestrators' journals) and its
    samples over the test, with what sampled them (`Testnet.metric_samples`)."""

    testnet: Testnet
    artifacts: Path
    samples: list[Sample]
    sampled_by: str


@dataclass(frozen=True)
class ReportPage:
    """What a test's report shows, taken in the test's process while its testnets were up;
    picklable, so that another process renders it (`harness.driver.report_worker`). The
    orchestrators' events are read from `journals` (artifact directories) when rendered."""

    nodeid: str
    outcome: str
    duration: float
    start: float
    end: float
    events: list[Event]
    samples: list[Sample]
    failure: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)
    sampled_by: list[str] = field(default_factory=list)
    journals: list[Path] = field(default_factory=list)

    def render(self) -> str:
        events = list(self.events)
        for artifacts in self.journals:
            events += orchestrator_events(artifacts)
        return render_report(
            self.nodeid,
            self.outcome,
            self.duration,
            self.start,
            self.end,
            events,
            self.samples,
            self.failure,
            self.links,
            self.sampled_by,
        )


def report_page(
    nodeid: str,
    outcome: str,
    duration: float,
    start: float,
    end: float,
    testnets: Sequence[Collected],
    failure: str = "",
) -> ReportPage:
    """The report of a test that used `testnets`; links in the page are relative to the
    directory that holds the artifact directories."""
    page = ReportPage(nodeid, outcome, duration, start, end, [], [], failure)
    for collected in testnets:
        testnet, artifacts = collected.testnet, collected.artifacts
        page.events.extend(testnet.journal.events(start, end))
        page.journals.append(artifacts)
        page.samples.extend(collected.samples)
        page.sampled_by.append(
            collected.sampled_by
            if len(testnets) == 1
            else f"{testnet.testnet_id}: {collected.sampled_by}"
        )
        page.links.extend(
            [
                (f"{testnet.testnet_id}: summary", f"{artifacts.name}/summary.txt"),
                (
                    f"{testnet.testnet_id}: every node's logs and metrics",
                    f"{artifacts.name}/nodes/",
                ),
                (f"{testnet.testnet_id}: registry versions", f"{artifacts.name}/registry/"),
            ]
        )
        if (artifacts / "prometheus").is_dir():
            page.links.append(
                (
                    f"{testnet.testnet_id}: Prometheus (its log, config, targets, TSDB snapshot)",
                    f"{artifacts.name}/prometheus/",
                )
            )
    return page


def failed_page(why: str) -> str:
    """The page written in place of a report that could not be rendered."""
    return _page("report failed", f"<pre>{html.escape(why)}</pre>")
