"""Bad metrics text, property-based: `parse_metrics` on random and malformed exposition text.

Whatever a scrape returns, `harness.driver.metrics_check.parse_metrics` gives a list of samples
or raises `MetricsScrapeError` naming the scraped source; never another exception. Well-formed
text gives exactly the samples written (timestamps and `_created` series dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.driver.errors import MetricsScrapeError
from harness.driver.metrics_check import Sample, parse_metrics

SOURCE = "node-7:9090"

metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,8}", fullmatch=True)
label_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=10)
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20)


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    help: str | None
    samples: tuple[tuple[dict[str, str], float, int | None], ...]


families = st.builds(
    Family,
    metric_names,
    st.sampled_from(["counter", "gauge", "untyped", None]),
    st.none() | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
    st.lists(
        st.tuples(
            st.dictionaries(label_names, label_values, max_size=3),
            values,
            st.none() | st.integers(0, 2**40),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda s: tuple(sorted(s[0].items())),
    ).map(tuple),
)


def escape(text: str, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    return repr(value)


def render(items: list[Family]) -> tuple[str, list[Sample]]:
    """Exposition text for `items` (made unique by an index), and the samples it holds."""
    lines: list[str] = []
    expected: list[Sample] = []
    for index, family in enumerate(items):
        name = f"{family.name}_{index}"
        if family.help is not None:
            lines.append(f"# HELP {name} {escape(family.help, quote=False)}")
        if family.kind is not None:
            lines.append(f"# TYPE {name} {family.kind}")
        sample_name = f"{name}_total" if family.kind == "counter" else name
        for labels, value, timestamp in family.samples:
            inner = ",".join(f'{k}="{escape(v, quote=True)}"' for k, v in labels.items())
            line = (
                f"{sample_name}{{{inner}}} {number(value)}"
                if inner
                else f"{sample_name} {number(value)}"
            )
            lines.append(line if timestamp is None else f"{line} {timestamp}")
            expected.append(Sample(sample_name, labels, float(value)))
    return "".join(line + "\n" for line in lines), expected


def same(got: list[Sample], expected: list[Sample]) -> bool:
    def key(sample: Sample) -> tuple[str, dict[str, str], float | str]:
        return sample.name, dict(sample.labels), "nan" if math.isnan(sample.value) else sample.value

    return [key(s) for s in got] == [key(s) for s in expected]


def parse_or_error(text: str) -> list[Sample] | None:
    try:
        samples = parse_metrics(text, SOURCE)
    except MetricsScrapeError as exc:
        assert str(exc).startswith(f"{SOURCE}: ")
        return None
    assert all(isinstance(s, Sample) and isinstance(s.value, float) for s in samples)
    assert not any(s.name.endswith("_created") for s in samples)
    return samples


@settings(max_examples=100, deadline=None)
@given(st.lists(families, max_size=4))
def test_well_formed_text_gives_exactly_its_samples(items: list[Family]) -> None:
    text, expected = render(items)
    assert same(parse_metrics(text, SOURCE), expected), text


@settings(max_examples=100, deadline=None)
@given(st.lists(families, min_size=1, max_size=3))
def test_created_series_are_dropped(items: list[Family]) -> None:
    text, expected = render(items)
    stamps = "".join(f"{f.name}_{i}_created 1.7e9\n" for i, f in enumerate(items))
    assert same(parse_metrics(text + stamps, SOURCE), expected)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200)
    | st.lists(
        st.sampled_from(
            [
                "# TYPE ",
                "# HELP ",
                "counter",
                "gauge",
                "histogram",
                "summary",
                "info",
                "stateset",
                "untyped",
                "unknown",
                "x",
                "x_total",
                "x_bucket",
                "x_sum",
                "x_count",
                "x_created",
                "{",
                "}",
                "=",
                ",",
                '"',
                "\\",
                "\\n",
                '\\"',
                " ",
                "\t",
                "\n",
                "le",
                "quantile",
                "1",
                "-1.5e3",
                "+Inf",
                "NaN",
                "nan",
                "0x1",
                "1_000",
                "# EOF",
                "\x00",
                "é",
            ]
        ),
        max_size=40,
    ).map("".join)
)
@example("x{")
@example('x{a="1} 1')
@example('x{a="\\q"} 1')
@example("x 1 2 3")
@example("x one")
@example("x 1 1e400")
@example("x 1 " + "9" * 5000)
@example("x " + "9" * 5000)
@example("# TYPE x counter\n# TYPE x gauge\nx 1\n")
@example("x 1\n# TYPE x gauge\n")
@example('# TYPE x histogram\nx_bucket{le="oops"} 1\n')
@example('# TYPE x summary\nx{quantile="a"} 1\n')
@example('# TYPE x stateset\nx{x="a"} 1\n')
@example("{} 1")
@example("x{,} 1")
@example('x{a="1",a="2"} 1')
def test_any_text_is_samples_or_a_scrape_error(text: str) -> None:
    parse_or_error(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(families, min_size=1, max_size=3), st.data())
def test_truncated_text_is_samples_or_a_scrape_error(
    items: list[Family], data: st.DataObject
) -> None:
    text, _ = render(items)
    parse_or_error(text[: data.draw(st.integers(0, len(text)), label="cut")])


@settings(max_examples=100, deadline=None)
@given(st.lists(families, min_size=1, max_size=3), st.data())
def test_corrupted_text_is_samples_or_a_scrape_error(
    items: list[Family], data: st.DataObject
) -> None:
    text, _ = render(items)
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 5), label="edits")):
        where = data.draw(st.integers(0, len(chars)), label="where")
        if data.draw(st.booleans(), label="insert") or where == len(chars):
            chars.insert(where, data.draw(st.sampled_from(list('{}=,"\\ \n#x1.e+-')), label="c"))
        else:
            del chars[where]
    parse_or_error("".join(chars))
