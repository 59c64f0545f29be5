"""`harness images push REGISTRY`: the node image goes to a registry that swarm machines pull
from. Tested against Debian's `docker-registry` (the standard registry API) on loopback, which
the docker engine accepts without TLS; `.ci/run` installs it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_loopback_ip, wait_for_http

from harness.cli import main
from harness.driver import BackendUnavailable
from harness.driver.backends.engine import engine


def _missing() -> str | None:
    if shutil.which("docker-registry") is None:
        return "docker-registry is not installed (apt-get install docker-registry)"
    try:
        engine().close()
    except BackendUnavailable as exc:
        return str(exc)
    return None


_MISSING = _missing()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    address = f"{free_loopback_ip([5000])}:5000"
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: {address}\n"
    )
    with (tmp_path / "registry.log").open("wb") as log:
        server = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_http(f"http://{address}/v2/", process=server)
        yield address
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.skipif(_MISSING is not None, reason=f"images push not tested: {_MISSING}")
def test_the_node_image_is_pushed_under_its_hash_tag(
    registry: str, capsys: pytest.CaptureFixture[str], node_image_tags: None
) -> None:
    assert main(["images", "push", registry]) == 0
    reference = capsys.readouterr().out.strip()
    assert reference.startswith(f"{registry}/harness-node:")
    tag = reference.rpartition(":")[2]
    tags = httpx.get(f"http://{registry}/v2/harness-node/tags/list").json()["tags"]
    assert tag in tags
    # The manifest is there too, i.e. another engine could pull it.
    manifest = httpx.head(
        f"http://{registry}/v2/harness-node/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert manifest.status_code == 200
    engine().images.remove(reference)  # the extra tag only; the image stays


@pytest.mark.parametrize("registry", ["http://10.0.0.5:5000", "10.0.0.5:5000/path", ""])
def test_a_registry_that_is_no_host_and_port_is_refused(
    registry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["images", "push", registry]) == 1
    assert "expected HOST or HOST:PORT" in capsys.readouterr().err
