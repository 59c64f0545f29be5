"""A program swapped for another executable (`InternetComputer.with_binary`): here ic-gateway
for a shell script, no Python program, that says what it was given and then execs the
harness's gateway, as a wrapper around the real ic-gateway binary would. The orchestrator
execs it with ic-gateway's registry-made environment, supervises it (a kill restarts it through
the script again) and the node's health on port 80 goes through it."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

MARK = b"swapped-in ic-gateway"
SCRIPT = f"""#!/bin/sh
echo "{MARK.decode()}: LISTEN_PLAIN=$LISTEN_PLAIN IC_URL=$IC_URL DOMAIN=$DOMAIN" >&2
for bin in /opt/harness/bin {Path(sys.executable).parent}; do
    [ -x "$bin/ic-gateway" ] && exec "$bin/ic-gateway" "$@"
done
echo "no ic-gateway to exec" >&2
exit 127
"""


def _gateway_script() -> Path:
    """The script, at a path of this user's that every run reuses (a node's container mounts
    it there), replaced atomically."""
    directory = Path(tempfile.gettempdir()) / f"harness-systest-binary-{os.getuid()}"
    directory.mkdir(exist_ok=True)
    staging = directory / f".ic-gateway.{os.getpid()}"
    staging.write_text(SCRIPT)
    staging.chmod(0o755)
    staging.replace(directory / "ic-gateway")
    return directory / "ic-gateway"


testnet = define_testnet(
    lambda: (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway())
        .with_binary("ic-gateway", _gateway_script())
    )
)


def _gateway_log(testnet: Testnet, node_id: str) -> bytes:
    return testnet.logs().get((node_id, "ic-gateway"), b"")


# The gateway is killed and started again on purpose.
@pytest.mark.systest
@pytest.mark.metric_thresholds(
    update_orchestrator={"orchestrator_processes_start_attempts_total": 2}
)
def test_a_program_runs_from_the_executable_it_was_swapped_for(testnet: Testnet) -> None:
    (node,) = testnet.nodes()
    assert node.await_status_is_healthy(port=80).is_healthy  # through the script's exec
    log = _gateway_log(testnet, node.node_id)
    assert log.count(MARK) == 1, log[-2000:]
    said = log[log.index(MARK) :].split(b"\n", 1)[0].decode()
    assert f"IC_URL=http://{node.ip}:8080" in said and "DOMAIN=gateway.icp" in said, said
    killed = node.kill_process("ic-gateway", signal.SIGKILL)
    pid = node.await_process("ic-gateway", running=True)
    while pid == killed:
        pid = node.await_process("ic-gateway", running=True)
    node.await_ready(30)
    assert _gateway_log(testnet, node.node_id).count(MARK) == 2
