"""The swarm backend's reading of a node service's tasks (`harness.driver.backends.swarm.tasks`),
on hand-made task dicts shaped like the engine's: which tasks are live or running, when a start
has failed or is stuck, and what a start's error lists. No Docker engine needed."""

from __future__ import annotations

import calendar
from typing import Any

import pytest

from harness.driver.backends.swarm import tasks
from harness.driver.backends.swarm.tasks import (
    NO_TASK_PATIENCE,
    PLACEMENT_PATIENCE,
    UNRESOLVED_PATIENCE,
)

START = "2026-12-07T23:55:31"  # a start's `since`: tasks created from then on are its own
BEFORE = "2026-12-07T23:54:02.118220671Z"
AFTER = "2026-12-07T23:55:33.500112044Z"
SOCKS_FAILURE = "ProxyError: General SOCKS server failure"  # what probing a lost name says


def task(
    state: str,
    desired: str = "running",
    created: str = AFTER,
    err: str | None = None,
    machine: str = "m1",
) -> dict[str, Any]:
    """A task as `Service.tasks()` lists it (the engine leaves `Err` out when there is none)."""
    status: dict[str, Any] = {"Timestamp": created, "State": state, "Message": state}
    if err is not None:
        status["Err"] = err
    return {
        "ID": f"task-{state}-{created}",
        "CreatedAt": created,
        "UpdatedAt": created,
        "NodeID": machine,
        "DesiredState": desired,
        "Status": status,
    }


class Resolver:
    """The overlay's DNS as `stuck` asks it: answers `address` (None: no record), counts calls."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.asked: list[str] = []

    def __call__(self, name: str) -> str | None:
        self.asked.append(name)
        return self.address


# live, running
@pytest.mark.parametrize("state", tasks.LIVE_TASK_STATES)
def test_a_task_meant_to_run_is_live_from_new_to_running(state: str) -> None:
    meant = task(state)
    assert tasks.live([meant]) == [meant]


@pytest.mark.parametrize("state", ["complete", "shutdown", "failed", "rejected", "orphaned"])
def test_an_ended_task_is_not_live(state: str) -> None:
    assert tasks.live([task(state, err="task: non-zero exit (1)")]) == []


def test_a_task_being_replaced_is_not_live_though_it_still_runs() -> None:
    replaced, new = task("running", desired="shutdown", created=BEFORE), task("preparing")
    assert tasks.live([replaced, new]) == [new]
    assert tasks.running([replaced, new]) == [replaced]


def test_a_task_without_a_status_is_neither_live_nor_running() -> None:
    bare = {"DesiredState": "running", "CreatedAt": AFTER}
    assert tasks.live([bare]) == []
    assert tasks.running([bare]) == []
    assert tasks.state(bare) is None
    assert tasks.error(bare) == ""


def test_running_tasks_are_those_in_state_running_on_any_machine() -> None:
    here, there = task("running", machine="m1"), task("running", machine="m2")
    assert tasks.running([task("starting"), here, task("complete"), there]) == [here, there]


# problem
@pytest.mark.parametrize("state", tasks.FAILED_TASK_STATES)
def test_a_task_of_this_start_that_failed_is_the_problem_with_its_error(state: str) -> None:
    ended = task(state, desired="shutdown", err="starting container failed: no such image")
    assert (
        tasks.problem([ended], START, 0.5)
        == f"its task {state}: starting container failed: no such image"
    )


def test_a_failed_task_of_an_earlier_start_is_no_problem() -> None:
    earlier = task("failed", desired="shutdown", created=BEFORE, err="non-zero exit (137)")
    assert tasks.problem([earlier, task("running")], START, 30.0) is None


def test_a_task_replaced_by_the_harness_is_no_problem_while_its_successor_prepares() -> None:
    """The forced update's victim ends rejected ("error while removing network"); `since`
    moved to the replacement, so only the new task counts."""
    victim = task(
        "rejected", desired="shutdown", created=BEFORE, err="error while removing network"
    )
    assert tasks.problem([victim, task("preparing")], START, 12.0) is None
    assert tasks.problem([victim, task("preparing")], BEFORE, 12.0) == (
        "its task rejected: error while removing network"
    )


def test_the_latest_failed_task_is_the_one_named() -> None:
    first = task("failed", created=AFTER, err="first")
    second = task("rejected", created="2026-12-07T23:55:40.000000000Z", err="second")
    assert tasks.problem([first, second], START, 1.0) == "its task rejected: second"


def test_a_task_no_machine_can_take_is_the_problem_after_the_placement_patience() -> None:
    pending = task("pending", err="no suitable node (scheduling constraints not satisfied)")
    assert tasks.problem([pending], START, PLACEMENT_PATIENCE) is None
    assert tasks.problem([pending], START, PLACEMENT_PATIENCE + 0.1) == (
        "the swarm cannot place it: no suitable node (scheduling constraints not satisfied)"
    )


def test_a_pending_task_without_a_reason_is_no_problem_however_long() -> None:
    assert tasks.problem([task("pending"), task("pending", err="")], START, 600.0) is None


def test_no_tasks_is_no_problem() -> None:
    assert tasks.problem([], START, 600.0) is None


# stuck
def test_no_start_is_stuck_within_the_no_task_patience() -> None:
    dns = Resolver(None)
    assert tasks.stuck("n1", [], SOCKS_FAILURE, NO_TASK_PATIENCE, dns) is None
    assert dns.asked == []


@pytest.mark.parametrize(
    "listed",
    [
        [],
        [task("shutdown", desired="shutdown", created=BEFORE)],
        [task("running", desired="shutdown", created=BEFORE)],
    ],
    ids=["no task", "an ended task", "a task meant to stop"],
)
def test_a_start_without_a_task_meant_to_run_is_stuck(listed: list[dict[str, Any]]) -> None:
    dns = Resolver(None)
    assert (
        tasks.stuck("n1", listed, "nothing observed yet", NO_TASK_PATIENCE + 0.1, dns)
        == "the swarm made no task for it"
    )
    assert dns.asked == []


def test_a_running_task_whose_name_the_overlay_lost_is_stuck_after_its_patience() -> None:
    dns = Resolver(None)
    listed = [task("running")]
    assert tasks.stuck("n1", listed, SOCKS_FAILURE, UNRESOLVED_PATIENCE, dns) is None
    assert dns.asked == []  # not asked before its patience is over
    assert (
        tasks.stuck("n1", listed, SOCKS_FAILURE, UNRESOLVED_PATIENCE + 0.1, dns)
        == "its task runs, but the overlay's DNS has no n1"
    )
    assert dns.asked == ["n1"]


def test_a_running_task_whose_name_resolves_is_not_stuck() -> None:
    dns = Resolver("10.200.3.7      n1")
    assert tasks.stuck("n1", [task("running")], SOCKS_FAILURE, UNRESOLVED_PATIENCE + 1, dns) is None
    assert dns.asked == ["n1"]


@pytest.mark.parametrize(
    ("listed", "last"),
    [
        ([task("running")], "ConnectError: [Errno 111] Connection refused"),
        ([task("preparing")], SOCKS_FAILURE),
        ([task("starting"), task("running", desired="shutdown", created=BEFORE)], SOCKS_FAILURE),
    ],
    ids=["another failure", "a task not running yet", "only a task meant to stop runs"],
)
def test_the_dns_is_asked_only_when_a_live_task_runs_and_the_proxy_cannot_resolve(
    listed: list[dict[str, Any]], last: str
) -> None:
    dns = Resolver(None)
    assert tasks.stuck("n1", listed, last, UNRESOLVED_PATIENCE + 1, dns) is None
    assert dns.asked == []


# created_since, summary
def test_since_is_a_second_before_the_start_in_the_engines_utc_text() -> None:
    wall = calendar.timegm((2026, 12, 7, 23, 55, 32, 0, 0, 0)) + 0.75
    since = tasks.created_since(wall)
    assert since == START
    during = task("failed", created="2026-12-07T23:55:32.001000000Z", err="exit (1)")
    before = task("failed", created="2026-12-07T23:55:30.999999999Z", err="exit (1)")
    assert tasks.problem([during], since, 0.0) == "its task failed: exit (1)"  # this start's
    assert tasks.problem([before], since, 0.0) is None  # an earlier start's


def test_the_summary_lists_the_last_five_tasks_made_oldest_first() -> None:
    made = [
        task("shutdown", desired="shutdown", created=f"2026-12-07T23:5{i}:00.1Z") for i in range(6)
    ]
    made[5] = task("failed", desired="shutdown", created=made[5]["CreatedAt"], err="exit (1)")
    lines = tasks.summary(list(reversed(made))).splitlines()
    assert lines == [
        "  2026-12-07T23:51:00.1Z shutdown (desired shutdown)",
        "  2026-12-07T23:52:00.1Z shutdown (desired shutdown)",
        "  2026-12-07T23:53:00.1Z shutdown (desired shutdown)",
        "  2026-12-07T23:54:00.1Z shutdown (desired shutdown)",
        "  2026-12-07T23:55:00.1Z failed (desired shutdown) exit (1)",
    ]


def test_the_summary_cuts_the_creation_time_to_the_millisecond_and_says_none_for_no_task() -> None:
    assert tasks.summary([task("running", created="2026-12-07T23:55:33.500112044Z")]) == (
        "  2026-12-07T23:55:33.500 running (desired running)"
    )
    assert tasks.summary([]) == "  none"
