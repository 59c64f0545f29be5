"""Unit tests of the orchestrator's flags and of environment-file parsing."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from harness.node.listen import ListenAddress
from harness.node.orchestrator.args import parse_args
from harness.node.orchestrator.envfile import EnvFileError, parse_env_text

REQUIRED = ["--node-id", "n1", "--registry-local-store", "reg", "--data-dir", "data"]


def test_defaults(tmp_path: Path) -> None:
    config = parse_args(REQUIRED)
    assert config.node_id == "n1"
    assert config.data_dir == Path("data").absolute()
    assert config.ic_binary_directory == Path(sysconfig.get_path("scripts"))
    assert config.metrics_listen_addr == ListenAddress("0.0.0.0", 9091)
    assert config.dashboard_listen_addr == ListenAddress("0.0.0.0", 7070)
    assert (config.check_interval, config.registry_poll_interval, config.stop_grace_period) == (
        10.0,
        0.2,
        10.0,
    )
    assert config.enable_ic_gateway is False
    assert (config.ic_gateway_port, config.ic_gateway_domain) == (80, "gateway.icp")
    assert config.version == "0.0.0"
    assert config.root_key_file is None
    assert dict(config.ic_gateway_env) == dict(config.ic_boundary_env) == {}
    assert config.logs_dir == Path("data").absolute() / "logs"
    assert config.run_dir == Path("data").absolute() / "run"


def test_all_flags(tmp_path: Path) -> None:
    (tmp_path / "gw.env").write_text('LISTEN_PLAIN="[::]:80"\n# comment\nIC_URL=http://x\n')
    (tmp_path / "bn.env").write_text("OBS_METRICS_ADDR='[::]:9324'\n")
    (tmp_path / "root.der").write_bytes(b"\x30")
    config = parse_args(
        [
            *REQUIRED,
            "--ic-binary-directory", str(tmp_path),
            "--metrics-listen-addr", "[::1]:19091",
            "--dashboard-listen-addr", "127.0.0.5:17070",
            "--enable-ic-gateway",
            "--check-interval", "2.5",
            "--registry-poll-interval", "0.05",
            "--stop-grace-period", "1",
            "--version", "1.2.3",
            "--root-key-file", str(tmp_path / "root.der"),
            "--ic-gateway-env-file", str(tmp_path / "gw.env"),
            "--ic-boundary-env-file", str(tmp_path / "bn.env"),
            "--ic-gateway-port", "8880",
            "--ic-gateway-domain", "gw.test",
            "--log-level", "debug",
        ]
    )  # fmt: skip
    assert config.metrics_listen_addr == ListenAddress("::1", 19091)
    assert config.enable_ic_gateway is True
    assert config.check_interval == 2.5
    assert config.version == "1.2.3"
    assert config.root_key_file == tmp_path / "root.der"
    assert dict(config.ic_gateway_env) == {"LISTEN_PLAIN": "[::]:80", "IC_URL": "http://x"}
    assert dict(config.ic_boundary_env) == {"OBS_METRICS_ADDR": "[::]:9324"}
    assert (config.ic_gateway_port, config.ic_gateway_domain, config.log_level) == (
        8880,
        "gw.test",
        "DEBUG",
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], None),
        (["--check-interval", "0"], "--check-interval: '0' must be a positive number of seconds"),
        (["--stop-grace-period", "soon"], "'soon' is not a number of seconds"),
        (["--ic-gateway-port", "70000"], "'70000' is not a TCP port (1-65535)"),
        (["--metrics-listen-addr", "::1:9091"], "put IPv6 hosts in brackets"),
        (["--ic-binary-directory", "/no/such/dir"], "'/no/such/dir' is not a directory"),
        (["--root-key-file", "/no/such/file"], "'/no/such/file' is not a file"),
        (["--ic-gateway-env-file", "/no/such/env"], "cannot read environment file /no/such/env"),
        (["--log-level", "chatty"], "invalid choice: 'CHATTY'"),
        (["--node-id", " "], "--node-id must not be empty"),
        (["--program-binary", "ic-gateway"], "'ic-gateway' is not NAME=PATH"),
        (["--program-binary", "nginx=/bin/sh"], "'nginx' is no program the orchestrator runs"),
        (["--program-binary", "replica=/no/such/file"], "'/no/such/file' is not a file"),
        (["--program-binary", "replica=/etc/passwd"], "'/etc/passwd' is not executable"),
    ],
)
def test_bad_flags_exit_2_with_a_message(extra: list[str], message: str | None, capsys) -> None:
    argv = ["--registry-local-store", "reg", "--data-dir", "data"] if not extra else REQUIRED
    with pytest.raises(SystemExit) as exited:
        parse_args(argv + extra if extra else argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (message or "the following arguments are required: --node-id") in err


def test_a_program_is_run_from_the_executable_it_is_swapped_for(tmp_path: Path) -> None:
    config = parse_args([*REQUIRED, "--program-binary", "ic-gateway=/bin/sh"])
    assert dict(config.program_binaries) == {"ic-gateway": Path("/bin/sh")}


def test_env_file_syntax() -> None:
    text = (
        "# comment\n; other comment\n\n"
        "PLAIN = value with spaces  \n"
        "EMPTY=\n"
        "SINGLE='a \"b\" $c'\n"
        'DOUBLE="x \\"y\\" \\\\ \\$z\\n"\n'
        "URL=http://h/?a=b=c\n"
    )
    assert parse_env_text(text) == {
        "PLAIN": "value with spaces",
        "EMPTY": "",
        "SINGLE": 'a "b" $c',
        "DOUBLE": 'x "y" \\ $z\n',
        "URL": "http://h/?a=b=c",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("NOEQUALS", "f.env:2: expected KEY=VALUE, got 'NOEQUALS'"),
        ("1KEY=x", "f.env:2: '1KEY' is not a valid variable name"),
        ('K="open', 'f.env:2: unterminated " quote'),
        ("K='a'b'", "f.env:2: stray ' inside a single-quoted value"),
        ('K="a\\qb"', "f.env:2: unknown escape \\q"),
        ('K="a"b"', 'f.env:2: unescaped " inside a double-quoted value'),
    ],
)
def test_env_file_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(EnvFileError) as caught:
        parse_env_text(f"OK=1\n{line}\n", "f.env")
    assert message in str(caught.value)
