"""Unit tests of the replica stub's pieces: flags, root key, faults, health, reject formats."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cbor2
import pytest

from harness.node.listen import ListenAddress
from harness.node.replica.config import parse_config
from harness.node.replica.faults import NO_FAULTS, Faults, FaultsError, FaultsFile, parse_faults
from harness.node.replica.health import Health
from harness.node.replica.rejects import not_found, reject
from harness.node.replica.rootkey import (
    DER_PREFIX,
    RootKeyError,
    check_root_key,
    default_root_key,
    load_root_key,
)
from harness.node.status import ReplicaHealthStatus

# --- flags ----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = parse_config([])
    assert config.http_listen == ListenAddress("0.0.0.0", 8080)
    assert config.metrics_listen == ListenAddress("0.0.0.0", 9090)
    assert config.replica_version == "0.0.0"
    assert config.node_id is None
    assert config.subnet_id is None
    assert config.root_key_file is None
    assert config.warmup_seconds == 0.2
    assert config.block_interval == 0.1
    assert config.faults_file is None
    assert config.graceful_timeout == 5.0
    assert config.log_level == "info"


def test_every_flag() -> None:
    config = parse_config(
        [
            "--http-listen=[::1]:18080",
            "--metrics-listen=127.0.0.2:19090",
            "--replica-version=abc",
            "--node-id=n",
            "--subnet-id=s",
            "--root-key-file=/k.der",
            "--warmup-seconds=0",
            "--block-interval=0.5",
            "--faults-file=/f.json",
            "--graceful-timeout=2.5",
            "--log-level=DEBUG",
        ]
    )
    assert config.http_listen == ListenAddress("::1", 18080)
    assert config.metrics_listen == ListenAddress("127.0.0.2", 19090)
    assert (config.replica_version, config.node_id, config.subnet_id) == ("abc", "n", "s")
    assert config.root_key_file == Path("/k.der")
    assert config.faults_file == Path("/f.json")
    assert (config.warmup_seconds, config.block_interval, config.graceful_timeout) == (0, 0.5, 2.5)
    assert config.log_level == "debug"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--http-listen=nonsense", "listen address 'nonsense': expected HOST:PORT"),
        ("--metrics-listen=127.0.0.1:99999", "port '99999' is not 0-65535"),
        ("--warmup-seconds=-1", "'-1': must be a finite number >= 0"),
        ("--warmup-seconds=nan", "'nan': must be a finite number >= 0"),
        ("--block-interval=0", "'0': must be a finite number > 0"),
        ("--graceful-timeout=soon", "'soon' is not a number of seconds"),
        ("--replica-version=", "argument --replica-version: must not be empty"),
        ("--log-level=loud", "invalid choice: 'loud'"),
        ("--no-such-flag", "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_flag_exits_2(flag: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config([flag])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# --- root key -------------------------------------------------------------------------------


def test_default_root_key_is_fixed_and_flagged_as_a_compressed_point() -> None:
    key = default_root_key()
    assert len(key) == 133
    assert key.startswith(DER_PREFIX)
    assert key[37] & 0x80, "compression flag"
    assert not key[37] & 0x40, "infinity flag"
    # Pinned: replicas of different builds in one testnet must report the same key.
    assert key[37:45].hex() == "896351153122970d"


def test_root_key_checks(tmp_path: Path) -> None:
    good = DER_PREFIX + bytes([0x80]) + bytes(95)
    assert check_root_key(good, "x") == good
    with pytest.raises(RootKeyError, match=r"root key x: expected 133 bytes .* got 134"):
        check_root_key(good + b"\0", "x")
    with pytest.raises(RootKeyError, match="does not start with the IC's DER prefix"):
        check_root_key(b"\1" + good[1:], "x")
    path = tmp_path / "k.der"
    with pytest.raises(RootKeyError, match=f"root key file {path}: cannot read it"):
        load_root_key(path)
    path.write_bytes(good)
    assert load_root_key(path) == good


# --- faults ---------------------------------------------------------------------------------


def test_parse_faults() -> None:
    assert parse_faults("{}") == NO_FAULTS
    assert parse_faults(
        json.dumps(
            {"fail_at_start": 3, "unhealthy": True, "delay_seconds": 1, "critical_errors": 2}
        )
    ) == Faults(fail_at_start=3, unhealthy=True, delay_seconds=1.0, critical_errors=2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object, got list"),
        ('{"delay": 1}', "unknown key(s) ['delay']"),
        ('{"fail_at_start": true}', '"fail_at_start" must be an exit code 0-255, got True'),
        ('{"fail_at_start": 256}', '"fail_at_start" must be an exit code 0-255, got 256'),
        ('{"unhealthy": 1}', '"unhealthy" must be true or false, got 1'),
        ('{"delay_seconds": "1"}', "\"delay_seconds\" must be a number, got '1'"),
        ('{"delay_seconds": -1}', '"delay_seconds" must be a finite number >= 0, got -1'),
        ('{"critical_errors": 1.5}', '"critical_errors" must be an integer >= 0, got 1.5'),
    ],
)
def test_parse_faults_rejects(text: str, message: str) -> None:
    with pytest.raises(FaultsError) as error:
        parse_faults(text)
    assert message in str(error.value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str) -> None:
    temporary = path.with_name(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_faults_file_rereads_on_change_at_most_every_100ms(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "faults.json"
    clock = FakeClock()
    faults = FaultsFile(path, clock)
    assert faults.faults == NO_FAULTS

    write(path, '{"unhealthy": true}')
    clock.now = 0.05
    assert faults.faults == NO_FAULTS, "checked less than 100 ms ago"
    clock.now = 0.2
    assert faults.faults == Faults(unhealthy=True)

    with caplog.at_level(logging.ERROR):
        write(path, '{"unhealthy": "yes"}')
        clock.now = 0.4
        assert faults.faults == Faults(unhealthy=True), "a bad file keeps the knobs in force"
    assert '"unhealthy" must be true or false' in caplog.text

    write(path, '{"critical_errors": 4}')
    clock.now = 0.6
    assert faults.faults == Faults(critical_errors=4)

    path.unlink()
    clock.now = 0.8
    assert faults.faults == NO_FAULTS


def test_faults_file_none_means_no_faults() -> None:
    assert FaultsFile(None).faults == NO_FAULTS


# --- health ---------------------------------------------------------------------------------

S = ReplicaHealthStatus


def make_health() -> tuple[Health, list[tuple[str, str]]]:
    transitions: list[tuple[str, str]] = []
    health = Health(10.0, 2.0, 0.1, lambda before, after: transitions.append((before, after)))
    return health, transitions


def test_health_lifecycle_and_height() -> None:
    health, transitions = make_health()
    health.update(10.5, unhealthy=False)
    assert (health.state, health.certified_height) == (S.STARTING, None)
    health.update(11.0, unhealthy=False)
    assert (health.state, health.certified_height) == (S.WAITING_FOR_CERTIFIED_STATE, 0)
    health.update(11.9, unhealthy=False)
    assert health.certified_height == 0
    health.update(12.0, unhealthy=False)
    assert (health.state, health.certified_height) == (S.HEALTHY, 0)
    health.update(12.25, unhealthy=False)
    assert health.certified_height == 2
    health.update(12.31, unhealthy=False)
    assert health.certified_height == 3
    assert transitions == [
        (S.STARTING, S.WAITING_FOR_CERTIFIED_STATE),
        (S.WAITING_FOR_CERTIFIED_STATE, S.HEALTHY),
    ]


def test_unhealthy_holds_waiting_and_freezes_the_height() -> None:
    health, transitions = make_health()
    health.update(11.0, unhealthy=True)
    health.update(13.0, unhealthy=True)
    assert health.state == S.WAITING_FOR_CERTIFIED_STATE
    health.update(13.0, unhealthy=False)
    health.update(13.5, unhealthy=False)
    assert (health.state, health.certified_height) == (S.HEALTHY, 5)
    health.update(13.5, unhealthy=True)
    health.update(20.0, unhealthy=True)
    assert (health.state, health.certified_height) == (S.WAITING_FOR_CERTIFIED_STATE, 5)
    health.update(20.0, unhealthy=False)
    health.update(20.1, unhealthy=False)
    assert (health.state, health.certified_height) == (S.HEALTHY, 6)
    assert transitions == [
        (S.STARTING, S.WAITING_FOR_CERTIFIED_STATE),
        (S.WAITING_FOR_CERTIFIED_STATE, S.HEALTHY),
        (S.HEALTHY, S.WAITING_FOR_CERTIFIED_STATE),
        (S.WAITING_FOR_CERTIFIED_STATE, S.HEALTHY),
    ]


def test_a_late_update_still_walks_every_state() -> None:
    health, transitions = make_health()
    health.update(50.0, unhealthy=False)
    assert health.state == S.HEALTHY
    assert transitions == [
        (S.STARTING, S.WAITING_FOR_CERTIFIED_STATE),
        (S.WAITING_FOR_CERTIFIED_STATE, S.HEALTHY),
    ]


# --- reject formats -------------------------------------------------------------------------


def test_reject_formats() -> None:
    canister = not_found("canister", "aaaaa-aa")
    fields = {
        "reject_code": 3,
        "reject_message": "Canister aaaaa-aa not found.",
        "error_code": "IC0301",
    }
    query = reject("v3", "query", canister)
    assert (query.status, query.content_type) == (200, "application/cbor")
    assert query.body.startswith(b"\xd9\xd9\xf7")
    assert cbor2.loads(query.body) == {"status": "rejected", **fields}
    assert cbor2.loads(reject("v2", "call", canister).body) == fields
    assert cbor2.loads(reject("v4", "call", canister).body) == {
        "status": "non_replicated_rejection",
        **fields,
    }
    read_state = reject("v2", "read_state", canister)
    assert (read_state.status, read_state.body) == (404, b"Canister aaaaa-aa not found.")
    subnet = not_found("subnet", "s")
    assert (subnet.error_code, subnet.reject_code, subnet.message) == (
        "IC0404",
        4,
        "Subnet s not found.",
    )
