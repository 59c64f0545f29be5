"""Unit tests of the process managers with a fake runner: no process is spawned.

Covers the IC's own cases for ic-boundary's manager and `MultipleProcessesManager` (the sets of
programs the catalog's descriptions make for subnet and API boundary nodes), restarts on a
later pass, crash-loop backoff, and the state machine. A runner's exit reaches the state machine
through `transition()` (the orchestrator's pass), which the tests call where a pass would.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.node.catalog import IC_BOUNDARY, IC_GATEWAY, REPLICA
from harness.node.description import Role
from harness.node.orchestrator.args import PROCESS_NAMES
from harness.node.orchestrator.errors import ProcessStartError, ProcessStopError
from harness.node.orchestrator.events import EventJournal
from harness.node.orchestrator.fake import FakeRunner
from harness.node.orchestrator.manager import Backoff, ProcessManager
from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.orchestrator.policy import Member, MultipleProcessesManager
from harness.node.orchestrator.process import Assignment
from harness.node.orchestrator.processes import (
    IcBoundaryConfig,
    IcBoundaryProcess,
    IcGatewayConfig,
    IcGatewayProcess,
    ReplicaArgs,
    ReplicaConfig,
    ReplicaProcess,
)
from harness.node.orchestrator.states import IllegalTransition, ProcessState, check_transition
from harness.node.registry import NodeRecord, SubnetType

T = TypeVar("T")
BIN = Path("/opt/ic/bin")
NODE = NodeRecord("127.1.0.2")
GATE = frozenset({"ic_gateway"})


def assign(subnet_type: SubnetType | None, gate: bool) -> Assignment:
    """The node in subnet-a (of `subnet_type`) at v1, its ic-gateway gate open or not."""
    return Assignment("v1", "subnet-a", subnet_type, NODE, GATE if gate else frozenset())


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sample(metrics: OrchestratorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def starts(metrics: OrchestratorMetrics, process: str) -> float | None:
    return sample(metrics, "orchestrator_processes_start_attempts_total", process=process)


def stops(metrics: OrchestratorMetrics, process: str) -> float | None:
    return sample(metrics, "orchestrator_processes_stop_attempts_total", process=process)


@pytest.fixture
def metrics() -> OrchestratorMetrics:
    return OrchestratorMetrics("1.0", PROCESS_NAMES)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def replica_manager(
    metrics: OrchestratorMetrics, clock: Clock, runner: FakeRunner | None = None
) -> ProcessManager[ReplicaConfig, ReplicaArgs]:
    return ProcessManager(
        ReplicaProcess,
        ReplicaConfig(BIN, "node-1", Path("/data")),
        runner or FakeRunner("replica"),
        metrics,
        Backoff(),
        clock,
    )


def runner_of(manager: ProcessManager[Any, Any]) -> FakeRunner:
    assert isinstance(manager.runner, FakeRunner)
    return manager.runner


# ---------------------------------------------------------------------------- ic-boundary
def boundary_manager(metrics: OrchestratorMetrics, clock: Clock) -> MultipleProcessesManager:
    manager = ProcessManager(
        IcBoundaryProcess,
        IcBoundaryConfig(BIN, {}, Path("/registry")),
        FakeRunner("ic-boundary"),
        metrics,
        Backoff(),
        clock,
    )
    return MultipleProcessesManager(Role.API_BOUNDARY, [Member(IC_BOUNDARY, manager)])


def ensure(boundary: MultipleProcessesManager, domain: str | None) -> None:
    """A pass of the boundary-node check: the node's record at v1 with `domain`."""
    run(boundary.start_all(Assignment("v1", None, None, NodeRecord("127.1.0.2", domain=domain))))


def boundary_runner(boundary: MultipleProcessesManager) -> FakeRunner:
    return runner_of(boundary.managers[0])


def test_ic_boundary_without_domain_is_never_started(metrics, clock) -> None:
    boundary = boundary_manager(metrics, clock)
    ensure(boundary, None)
    assert boundary_runner(boundary).starts == []
    assert starts(metrics, "ic-boundary") == 0


def test_ic_boundary_same_domain_twice_starts_once(metrics, clock) -> None:
    boundary = boundary_manager(metrics, clock)
    for _ in range(2):
        ensure(boundary, "a.example")
    runner = boundary_runner(boundary)
    assert len(runner.starts) == 1
    assert runner.starts[0].argv == (
        "/opt/ic/bin/ic-boundary",
        "--tls-hostname",
        "a.example",
        "--crypto-config",
        "{}",
    )
    assert starts(metrics, "ic-boundary") == 1
    assert stops(metrics, "ic-boundary") == 0


def test_ic_boundary_domain_change_restarts_on_a_later_call(metrics, clock) -> None:
    boundary = boundary_manager(metrics, clock)
    runner = boundary_runner(boundary)
    ensure(boundary, "a.example")
    ensure(boundary, "b.example")
    # Stopped, not yet started again: the old one still runs until it exited.
    assert (len(runner.starts), runner.stops) == (1, 1)
    ensure(boundary, "b.example")
    assert (len(runner.starts), runner.stops) == (1, 1)  # no second SIGTERM, no early start
    runner.exit(-15)
    ensure(boundary, "b.example")
    assert (len(runner.starts), runner.stops) == (2, 1)
    assert runner.last_spec.argv[1:3] == ("--tls-hostname", "b.example")
    assert starts(metrics, "ic-boundary") == 2
    assert stops(metrics, "ic-boundary") == 1


def test_ic_boundary_domain_removed_stops_it(metrics, clock) -> None:
    boundary = boundary_manager(metrics, clock)
    runner = boundary_runner(boundary)
    ensure(boundary, "a.example")
    ensure(boundary, None)
    assert runner.stops == 1
    assert runner.stop_requested
    runner.exit(-15)
    boundary.managers[0].transition()
    assert boundary.managers[0].state is ProcessState.STOPPED


# ------------------------------------------------------------------ MultipleProcessesManager
def subnet_managers(
    metrics: OrchestratorMetrics, clock: Clock, order: list[str] | None = None
) -> tuple[MultipleProcessesManager, FakeRunner, FakeRunner]:
    class Recording(FakeRunner):
        def stop(self) -> None:
            if order is not None and self.is_running():
                order.append(self.name)
            super().stop()

    replica_runner, gateway_runner = Recording("replica"), Recording("ic-gateway", 2000)
    replica = replica_manager(metrics, clock, replica_runner)
    gateway = ProcessManager(
        IcGatewayProcess,
        IcGatewayConfig(BIN, {"LOG_LEVEL": "info"}),
        gateway_runner,
        metrics,
        Backoff(),
        clock,
    )
    manager = MultipleProcessesManager(
        Role.REPLICA, [Member(REPLICA, replica), Member(IC_GATEWAY, gateway)]
    )
    return manager, replica_runner, gateway_runner


def test_start_all_runs_gateway_only_on_cloud_engine_with_gate_on(metrics, clock) -> None:
    manager, replica, gateway = subnet_managers(metrics, clock)
    run(manager.start_all(assign(SubnetType.APPLICATION, True)))
    run(manager.start_all(assign(SubnetType.CLOUD_ENGINE, False)))
    assert (len(replica.starts), len(gateway.starts)) == (1, 0)
    run(manager.start_all(assign(SubnetType.CLOUD_ENGINE, True)))
    assert (len(replica.starts), len(gateway.starts)) == (1, 1)
    assert gateway.last_spec.argv == ("/opt/ic/bin/ic-gateway",)
    assert dict(gateway.last_spec.env) == {
        "LOG_LEVEL": "info",
        "LISTEN_PLAIN": "127.1.0.2:80",
        "IC_URL": "http://127.1.0.2:8080",
        "DOMAIN": "gateway.icp",
        "METRICS_LISTEN": "127.1.0.2:9325",
    }


@pytest.mark.parametrize(
    ("subnet_type", "gate"),
    [(SubnetType.CLOUD_ENGINE, False), (SubnetType.APPLICATION, True), (None, True)],
)
def test_start_all_stops_a_running_gateway_when_no_longer_wanted(
    metrics, clock, subnet_type, gate
) -> None:
    manager, replica, gateway = subnet_managers(metrics, clock)
    run(manager.start_all(assign(SubnetType.CLOUD_ENGINE, True)))
    assert gateway.is_running()
    run(manager.start_all(assign(subnet_type, gate)))
    assert gateway.stops == 1
    assert gateway.stop_requested
    assert replica.stops == 0
    assert stops(metrics, "ic-gateway") == 1
    gateway.exit(-15)
    run(manager.start_all(assign(subnet_type, gate)))
    assert len(gateway.starts) == 1  # not started again
    assert gateway.stops == 1


def test_start_all_continues_past_a_failure_and_raises_the_first_error(metrics, clock) -> None:
    manager, replica, gateway = subnet_managers(metrics, clock)
    replica.start_error = FileNotFoundError(errno.ENOENT, "No such file", "/opt/ic/bin/replica")
    with pytest.raises(ProcessStartError, match="Error when attempting to start replica process"):
        run(manager.start_all(assign(SubnetType.CLOUD_ENGINE, True)))
    assert gateway.is_running()
    assert starts(metrics, "replica") == 1
    assert starts(metrics, "ic-gateway") == 1


def test_start_all_with_two_failures_raises_the_first(metrics, clock) -> None:
    manager, replica, gateway = subnet_managers(metrics, clock)
    replica.start_error = PermissionError(errno.EACCES, "Permission denied")
    gateway.start_error = FileNotFoundError(errno.ENOENT, "No such file")
    with pytest.raises(ProcessStartError) as caught:
        run(manager.start_all(assign(SubnetType.CLOUD_ENGINE, True)))
    assert str(caught.value).startswith("Error when attempting to start replica process")


def test_stop_all_stops_in_reverse_order_and_continues_on_error(metrics, clock) -> None:
    order: list[str] = []
    manager, replica, gateway = subnet_managers(metrics, clock, order)
    run(manager.start_all(assign(SubnetType.CLOUD_ENGINE, True)))
    manager.stop_all()
    assert order == ["ic-gateway", "replica"]

    replica.exit(-15)
    gateway.exit(-15)
    run(manager.start_all(assign(SubnetType.CLOUD_ENGINE, True)))
    gateway.stop_error = PermissionError(errno.EPERM, "Operation not permitted")
    with pytest.raises(ProcessStopError, match="Error when attempting to stop the ic-gateway"):
        manager.stop_all()
    assert replica.stops == 2  # still stopped after the gateway's failure


def test_stop_all_when_nothing_runs_is_a_noop(metrics, clock, caplog) -> None:
    manager, replica, gateway = subnet_managers(metrics, clock)
    with caplog.at_level(logging.INFO):
        manager.stop_all()
    assert replica.stops == gateway.stops == 0
    assert stops(metrics, "replica") == 0
    assert "Stopping" not in caplog.text


# ------------------------------------------------------------------------- ProcessManager
def test_version_change_stops_now_and_starts_on_a_later_pass(metrics, clock, caplog) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    with caplog.at_level(logging.INFO):
        run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
        run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
        assert (len(runner.starts), runner.stops) == (1, 0)
        run(replica.ensure_running(ReplicaArgs("v2", "subnet-a", "127.1.0.2")))
        assert (len(runner.starts), runner.stops) == (1, 1)
        assert replica.state is ProcessState.STOPPING
        run(replica.ensure_running(ReplicaArgs("v2", "subnet-a", "127.1.0.2")))
        assert (len(runner.starts), runner.stops) == (1, 1)
        runner.exit(-15, runtime=1.0)  # a requested exit: no backoff however short
        replica.transition()
        assert replica.state is ProcessState.STOPPED
        run(replica.ensure_running(ReplicaArgs("v2", "subnet-a", "127.1.0.2")))
    assert (len(runner.starts), runner.stops) == (2, 1)
    assert runner.last_spec.argv[1:3] == ("--replica-version", "v2")
    assert starts(metrics, "replica") == 2
    assert stops(metrics, "replica") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("Starting new replica process") == 2
    assert messages.count("Stopping replica process") == 1
    assert "Restarting replica process: replica version changed from v1 to v2" in messages


def test_subnet_change_restarts_the_replica(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-b", "127.1.0.2")))
    assert runner.stops == 1
    runner.exit(-15)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-b", "127.1.0.2")))
    assert runner.last_spec.argv[5:7] == ("--subnet-id", "subnet-b")


def test_stop_when_not_running_is_a_noop(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    replica.stop()
    assert runner_of(replica).stops == 0
    assert stops(metrics, "replica") == 0
    assert replica.state is ProcessState.STOPPED


def test_crash_after_long_uptime_restarts_on_the_next_pass(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    args = ReplicaArgs("v1", "subnet-a", "127.1.0.2")
    run(replica.ensure_running(args))
    runner.exit(1, runtime=60.0)
    replica.transition()
    assert replica.state is ProcessState.EXITED
    assert replica.next_wakeup() is None
    run(replica.ensure_running(args))
    assert replica.state is ProcessState.RUNNING
    assert len(runner.starts) == 2
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0


def test_quick_crashes_back_off_exponentially_up_to_the_maximum(metrics, clock, caplog) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    args = ReplicaArgs("v1", "subnet-a", "127.1.0.2")
    run(replica.ensure_running(args))
    delays = []
    for _ in range(9):
        runner.exit(1, runtime=0.2)
        replica.transition()
        assert replica.state is ProcessState.BACKOFF
        wakeup = replica.next_wakeup()
        assert wakeup is not None
        delays.append(wakeup - clock.now)
        gauge = sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica")
        assert gauge == delays[-1]
        clock.advance(delays[-1] - 0.01)
        run(replica.ensure_running(args))  # too early: nothing happens
        assert replica.state is ProcessState.BACKOFF
        clock.advance(0.01)
        run(replica.ensure_running(args))
        assert replica.state is ProcessState.RUNNING
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert len(runner.starts) == 10
    assert (
        "replica exited on its own after 0.2 s (exit code 1): restarting it in 0.5 s" in caplog.text
    )


def test_backoff_resets_after_the_process_stayed_up(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    args = ReplicaArgs("v1", "subnet-a", "127.1.0.2")
    run(replica.ensure_running(args))
    for delay in (0.5, 1.0):
        runner.exit(1, runtime=0.2)
        replica.transition()
        assert replica.next_wakeup() == clock.now + delay
        clock.advance(delay)
        run(replica.ensure_running(args))
    clock.advance(10.0)
    replica.transition()  # the pass that sees it stayed up resets the backoff
    assert replica.state is ProcessState.RUNNING
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0
    runner.exit(1, runtime=0.2)
    replica.transition()
    assert replica.next_wakeup() == clock.now + 0.5


def test_reading_never_changes_the_state_only_transition_does(metrics, clock, caplog) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
    running = replica.current
    runner.exit(1, runtime=0.2)
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):  # what the dashboard, the metrics and the loop's sleep read
            assert replica.state is ProcessState.RUNNING
            assert replica.is_running()
            assert replica.current is running
            assert replica.next_wakeup() is None
    assert caplog.records == []  # no transition ran, none was logged
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0

    replica.transition()  # RUNNING -> BACKOFF
    assert replica.state is ProcessState.BACKOFF
    assert not replica.is_running() and replica.current is None
    assert replica.next_wakeup() == clock.now + 0.5
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0.5
    replica.transition()  # nothing new happened: no second backoff step
    assert replica.next_wakeup() == clock.now + 0.5


def test_the_backoff_is_forgotten_on_a_transition_not_on_a_read(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    args = ReplicaArgs("v1", "subnet-a", "127.1.0.2")
    run(replica.ensure_running(args))
    runner.exit(1, runtime=0.2)
    replica.transition()
    clock.advance(0.5)
    run(replica.ensure_running(args))
    assert replica.state is ProcessState.RUNNING
    clock.advance(10.0)
    assert replica.state is ProcessState.RUNNING
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0.5
    replica.transition()
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0


def test_failed_spawn_backs_off_too(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    args = ReplicaArgs("v1", "subnet-a", "127.1.0.2")
    runner.start_error = FileNotFoundError(errno.ENOENT, "No such file or directory")
    with pytest.raises(ProcessStartError):
        run(replica.ensure_running(args))
    assert replica.state is ProcessState.BACKOFF
    run(replica.ensure_running(args))  # within the backoff: no new attempt, no error
    assert starts(metrics, "replica") == 1
    clock.advance(0.5)
    with pytest.raises(ProcessStartError):
        run(replica.ensure_running(args))
    assert starts(metrics, "replica") == 2
    assert replica.next_wakeup() == clock.now + 1.0


def test_new_args_do_not_wait_for_the_backoff(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
    runner.exit(1, runtime=0.1)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
    assert len(runner.starts) == 1
    run(replica.ensure_running(ReplicaArgs("v2", "subnet-a", "127.1.0.2")))
    assert len(runner.starts) == 2
    assert runner.last_spec.argv[2] == "v2"


def test_stop_during_backoff_cancels_the_restart(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
    runner.exit(1, runtime=0.1)
    replica.stop()
    assert replica.state is ProcessState.STOPPED
    assert replica.next_wakeup() is None
    assert stops(metrics, "replica") == 0
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0


def test_forgetting_the_backoff_starts_a_backed_off_program_at_once(metrics, clock) -> None:
    """The harness's reset: a program in BACKOFF is due at once, with no delay left, and its
    next quick exit backs off by the first delay again, as on a fresh orchestrator."""
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    args = ReplicaArgs("v1", "subnet-a", "127.1.0.2")
    run(replica.ensure_running(args))
    runner.exit(1, runtime=0.2)  # a quick exit: 0.5 s
    replica.transition()
    clock.advance(0.5)
    run(replica.ensure_running(args))
    runner.exit(1, runtime=0.2)  # another: 1 s
    replica.transition()
    assert replica.state is ProcessState.BACKOFF
    assert replica.next_wakeup() == clock.now + 1.0
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 1.0

    assert replica.forget_backoff() == 1.0
    assert replica.state is ProcessState.BACKOFF  # until the pass's checks start it
    assert replica.next_wakeup() is None  # no retry pending: nothing for the loop to wait for
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0
    run(replica.ensure_running(args))  # no time passed: started at once
    assert replica.state is ProcessState.RUNNING
    assert len(runner.starts) == 3

    runner.exit(1, runtime=0.2)
    replica.transition()
    assert replica.next_wakeup() == clock.now + 0.5  # the first delay again, not 2 s
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0.5


def test_forgetting_the_backoff_leaves_a_running_program_alone(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    args = ReplicaArgs("v1", "subnet-a", "127.1.0.2")
    run(replica.ensure_running(args))
    runner.exit(1, runtime=0.2)
    replica.transition()
    clock.advance(0.5)
    run(replica.ensure_running(args))  # restarted after the backoff; its delay is kept
    pid = replica.pid()
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0.5

    assert replica.forget_backoff() == 0.5
    assert replica.state is ProcessState.RUNNING and replica.pid() == pid
    assert sample(metrics, "orchestrator_process_restart_backoff_seconds", process="replica") == 0
    run(replica.ensure_running(args))
    assert replica.pid() == pid and len(runner.starts) == 2 and runner.stops == 0
    runner.exit(1, runtime=0.2)
    replica.transition()
    assert replica.next_wakeup() == clock.now + 0.5  # not 1 s: the delay was forgotten
    # Nothing to forget: a no-op that says so.
    stopped = replica_manager(metrics, clock, FakeRunner("replica"))
    assert stopped.forget_backoff() == 0.0
    assert stopped.state is ProcessState.STOPPED


def test_a_backed_off_program_no_longer_wanted_stays_stopped_after_a_reset(metrics, clock) -> None:
    replica = replica_manager(metrics, clock)
    runner = runner_of(replica)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
    runner.exit(1, runtime=0.2)
    replica.transition()
    replica.forget_backoff()
    replica.stop()  # what the policy does with a program it does not want
    assert replica.state is ProcessState.STOPPED
    assert len(runner.starts) == 1


def test_backoff_delays() -> None:
    backoff = Backoff(initial=0.5, factor=2, maximum=3)
    delays = [0.0]
    for _ in range(5):
        delays.append(backoff.next_delay(delays[-1]))
    assert delays[1:] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_illegal_transition_names_the_states() -> None:
    check_transition("replica", ProcessState.RUNNING, ProcessState.STOPPING)
    with pytest.raises(
        IllegalTransition, match="replica: illegal state transition stopping -> running"
    ):
        check_transition("replica", ProcessState.STOPPING, ProcessState.RUNNING)


# ------------------------------------------------------------------------- the event journal
def test_the_journal_records_starts_exits_backoffs_restarts_and_stops(
    metrics, clock, tmp_path: Path
) -> None:
    journal = EventJournal(tmp_path / "logs" / "events.jsonl", "node-1", clock=clock)
    replica = ProcessManager(
        ReplicaProcess,
        ReplicaConfig(BIN, "node-1", Path("/data")),
        FakeRunner("replica"),
        metrics,
        Backoff(),
        clock,
        journal,
    )
    runner = runner_of(replica)
    run(replica.ensure_running(ReplicaArgs("v1", "subnet-a", "127.1.0.2")))
    clock.advance(1)
    runner.exit(-9, runtime=1.0)  # dies quickly, on its own: a backoff
    replica.transition()
    clock.advance(1)
    run(replica.ensure_running(ReplicaArgs("v2", "subnet-a", "127.1.0.2")))  # new args: at once
    run(replica.ensure_running(ReplicaArgs("v3", "subnet-a", "127.1.0.2")))  # a restart
    runner.exit(-15, runtime=0.5)
    replica.transition()
    journal.close()
    events = [
        json.loads(line) for line in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()
    ]
    assert all(e["node"] == "node-1" and e["program"] == "replica" for e in events)
    assert [(e["t"], e["event"]) for e in events] == [
        (100.0, "start"),
        (101.0, "exit"),
        (101.0, "backoff"),
        (102.0, "start"),
        (102.0, "restart"),
        (102.0, "stop"),
        (102.0, "exit"),
    ]
    assert events[0]["pid"] == 1000 and events[3]["pid"] == 1001
    assert (events[1]["status"], events[1]["requested"]) == ("killed by signal 9 (SIGKILL)", False)
    assert events[2]["delay"] == Backoff().initial
    assert events[4]["reason"] == "replica version changed from v2 to v3"
    assert (events[6]["status"], events[6]["requested"]) == ("killed by signal 15 (SIGTERM)", True)


def test_a_journal_that_cannot_be_written_never_stops_supervision(
    metrics, clock, tmp_path, caplog
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    journal = EventJournal(blocker / "events.jsonl", "node-1", clock=clock)
    with caplog.at_level(logging.ERROR):
        journal.record("replica", "start", pid=1)
        journal.record("replica", "exit", status="exit code 0")
    assert [r.getMessage() for r in caplog.records if "event journal" in r.getMessage()] == [
        f"cannot write the event journal {blocker / 'events.jsonl'}, recording no more events: "
        f"[Errno 17] File exists: '{blocker}'"
    ]
