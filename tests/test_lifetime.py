"""The end of what is left up (`harness.driver.lifetime`): `harness up --detach --ttl` and
`pytest --keep-testnet --keep-ttl` give a testnet a lifetime that `harness ls` shows; its reaper
removes it when it expires though no harness command runs, leaving nothing; a session attached
to it renews it, so it outlives its first end."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness_cli import harness
from inner_pytest import BACKENDS, nothing_left, own_state  # noqa: F401 (autouse)

from harness.driver import HarnessError
from harness.driver.lifetime import describe_duration, parse_duration
from harness.driver.run import tagged_processes
from harness.driver.state import state_root

TOPOLOGY = """
from harness.driver import InternetComputer, Subnet, SubnetType

def topology():
    return InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
"""


def _listing() -> list[dict[str, Any]]:
    listing = harness("ls", "--json")
    assert listing.returncode == 0, listing.stderr
    entries: list[dict[str, Any]] = json.loads(listing.stdout)
    return entries


def _await_gone(timeout: float) -> None:
    """Wait (no harness command but `ls` runs meanwhile) until no testnet is left and no
    process of its run runs (the reaper and the owner end just after the testnet's record).
    What is still there says why: the owner's and the reaper's logs."""
    deadline = time.monotonic() + timeout
    while _listing() or tagged_processes():
        assert time.monotonic() < deadline, (
            f"still there after {timeout} s: {_listing()}, {tagged_processes()}\n{_logs()}"
        )
        time.sleep(0.2)


def _logs() -> str:
    """The ends of the owners' (`harness up --detach`) and the reapers' logs of every run."""
    runs = state_root() / "runs"
    found = sorted([*runs.glob("*/harness-up.log"), *runs.glob("*/*/reaper.log")])
    return (
        "\n".join(
            f"--- {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
            for path in found
        )
        or f"(no log under {runs})"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("90m", 5400), ("2h", 7200), ("1d", 86400), ("1.5h", 5400), ("45", 45)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "never", "none", "0s"])
def test_no_end(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["", "2 hours", "-1h", "h", "1w"])
def test_bad_durations_name_the_problem(text: str) -> None:
    with pytest.raises(HarnessError, match=r"--ttl .*expected e\.g\. 30s, 90m, 2h or 1d"):
        parse_duration(text, "--ttl")


def test_durations_for_people() -> None:
    assert [describe_duration(s) for s in (7199.6, 250, 12, -3)] == [
        "2h 00m",
        "4m 10s",
        "12s",
        "0s",
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_detached_testnet_is_removed_when_it_expires(
    pytester: pytest.Pytester, backend: str
) -> None:
    pytester.makepyfile(topology=TOPOLOGY)
    up = harness(
        "up", "--detach", "--backend", backend, "--topology", "topology.py", "--ttl", "10s"
    )
    assert up.returncode == 0, up.stderr
    assert "removed in " in up.stderr
    (entry,) = _listing()
    assert entry["expires"] <= time.time() + 10
    assert "EXPIRES" in harness("ls").stdout
    _await_gone(60)
    nothing_left()


def test_a_kept_testnet_expires_unless_a_session_attached_to_it_renews_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        topology=TOPOLOGY,
        test_it="""
import os
import time

from harness.pytest_plugin import define_testnet
from topology import topology

testnet = define_testnet(topology)

def test_up(testnet):
    assert testnet.nodes()[0].status().is_healthy

def test_outlives_its_first_end(testnet):
    first_end = float(os.environ["FIRST_END"])
    while time.time() < first_end + 1:  # past the end it had before the session attached
        time.sleep(0.1)
    assert testnet.nodes()[0].status().is_healthy
""",
    )
    kept = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "--keep-testnet", "--keep-ttl", "30s", "-k", "test_up"
    )
    kept.assert_outcomes(passed=1)
    kept.stdout.fnmatch_lines(["kept up: * removes it (or, * its end in *s: --keep-ttl)"])
    (entry,) = _listing()
    monkeypatch.setenv("FIRST_END", str(entry["expires"]))
    attached = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "--testnet", entry["testnet"], "-k", "outlives"
    )
    attached.assert_outcomes(passed=1)
    (after,) = _listing()  # renewed when the session let go of it
    assert after["testnet"] == entry["testnet"] and after["expires"] > entry["expires"]
    _await_gone(60)
    nothing_left()


def test_a_bad_ttl_is_a_usage_error(pytester: pytest.Pytester) -> None:
    up = harness("up", "--detach", "--ttl", "2 hours")
    assert up.returncode == 2
    assert "--ttl '2 hours': expected e.g. 30s, 90m, 2h or 1d" in up.stderr
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--keep-ttl", "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: harness_keep_ttl = 'soon': expected e.g. 30s*"])
