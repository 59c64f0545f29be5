"""Node images: built offline, cached by what goes in, a code change costs one layer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import engines
import pytest

from harness.driver.backends import images
from harness.driver.backends.engine import engine
from harness.driver.errors import BackendUnavailable

needs_docker = engines.needs_docker("image builds")


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = engine()
    yield client
    client.close()


def _copy_package(destination: Path) -> Path:
    """A copy of the harness package (what an image is built from), in `destination`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    return Path(shutil.copytree(images.package_dir(), destination / "harness", ignore=ignore))


@needs_docker
def test_second_build_is_a_no_op(client: docker.DockerClient) -> None:
    first = images.ensure_node_image(client=client)
    second = images.ensure_node_image(client=client)
    assert second.tag == first.tag
    assert second.tag.startswith("harness-node:")
    assert not second.built
    assert second.steps == []
    assert client.images.get(second.tag).attrs["Config"]["Entrypoint"] == [
        "/usr/bin/tini",
        "--",
        "/usr/local/bin/harness-node-entrypoint",
    ]


@needs_docker
def test_the_node_image_holds_only_what_nodes_need(client: docker.DockerClient) -> None:
    tag = images.build_node_image(client=client)
    probe = (
        "import importlib.util, json, shutil; "
        "print(json.dumps({"
        "'absent': [m for m in ('pytest', 'testcontainers', 'docker', 'rich', 'pip', 'httpx', "
        "'aiohttp', 'harness.driver', 'harness.cli') if importlib.util.find_spec(m.split('.')[0]) "
        "and importlib.util.find_spec(m)], "
        "'present': [m for m in ('uvicorn', 'httptools', 'cbor2', 'prometheus_client', 'psutil', "
        "'harness.node.replica') if importlib.util.find_spec(m)], "
        "'programs': [p for p in ('replica', 'ic-gateway', 'ic-boundary', 'orchestrator', "
        "'registry-service') if shutil.which(p)]}))"
    )
    output = client.containers.run(
        tag, entrypoint=["/opt/harness/bin/python3", "-c"], command=[probe], remove=True
    )
    found = json.loads(output)
    assert found["absent"] == []
    assert found["present"] == [
        "uvicorn",
        "httptools",
        "cbor2",
        "prometheus_client",
        "psutil",
        "harness.node.replica",
    ]
    assert len(found["programs"]) == 5


@needs_docker
def test_code_change_rebuilds_only_the_project_layer(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    source = _copy_package(tmp_path)
    images.ensure_node_image(source, client=client)
    token = uuid.uuid4().hex
    (source / "node" / "_image_probe.py").write_text(f'TOKEN = "{token}"\n')
    started = time.monotonic()
    report = images.ensure_node_image(source, client=client)
    took = time.monotonic() - started
    try:
        assert not report.base_built
        layers = report.layer_steps
        assert [s.cached for s in layers] == [True] * (len(layers) - 1) + [False]
        assert layers[-1].instruction.startswith("COPY site/ ")
        probe = client.containers.run(
            report.tag,
            entrypoint=["/opt/harness/bin/python", "-c"],
            command=["import harness.node._image_probe as p; print(p.TOKEN)"],
            remove=True,
        )
        assert probe.decode().strip() == token
        print(f"project-layer rebuild took {took:.1f} s")
    finally:
        client.images.remove(report.tag)


LOCK = """\
# a comment
cbor2==6.2.1 \\
    --hash=sha256:00aa \\
    --hash=sha256:00bb
    # via harness
uvicorn==0.54.0 --hash=sha256:00cc
"""


def test_the_node_lock_is_read_as_exact_hashed_pins() -> None:
    assert images.locked_versions(LOCK) == {"cbor2": "6.2.1", "uvicorn": "0.54.0"}
    shipped = images.locked_versions(
        (
            images.package_dir() / "driver" / "backends" / "node_image" / "requirements.lock"
        ).read_text()
    )
    assert "uvicorn" in shipped
    assert not {"pytest", "testcontainers", "docker", "rich"} & set(shipped)


@pytest.mark.parametrize(
    ("line", "problem"),
    [("cbor2>=6 --hash=sha256:00", "'cbor2>=6'"), ("cbor2==6.2.1", "'cbor2==6.2.1'")],
)
def test_a_lock_without_exact_hashed_pins_is_refused(line: str, problem: str) -> None:
    with pytest.raises(images.ImageBuildError, match=f"{problem} is not pinned as name==version"):
        images.locked_versions(LOCK + line + "\n")


def test_package_files_are_the_node_package_without_bytecode(tmp_path: Path) -> None:
    package = tmp_path / "harness"
    (package / "node" / "__pycache__").mkdir(parents=True)
    (package / "node" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    (package / "node" / ".mypy_cache").mkdir()
    (package / "node" / ".mypy_cache" / "x.json").write_text("{}")
    (package / "__init__.py").write_text("")
    (package / "node" / "a.py").write_text("A = 1\n")
    (package / "node" / "sub").mkdir()
    (package / "node" / "sub" / "b.py").write_text("B = 2\n")
    (package / "driver").mkdir()
    (package / "driver" / "c.py").write_text("C = 3\n")
    assert images.package_files(package) == {
        "harness/__init__.py": b"",
        "harness/node/a.py": b"A = 1\n",
        "harness/node/sub/b.py": b"B = 2\n",
    }


def test_every_node_program_gets_a_launcher() -> None:
    programs = images.node_programs()
    assert set(programs) == {
        "replica",
        "ic-gateway",
        "ic-boundary",
        "orchestrator",
        "registry-service",
    }
    assert "harness" not in programs  # the CLI is the driver's, not a node's
    launcher = images.launcher(programs["replica"]).decode()
    assert launcher.startswith("#!/opt/harness/bin/python3\n")
    assert "from harness.node.replica.__main__ import main" in launcher


def test_a_distribution_that_adds_node_programs_goes_into_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its files (module and metadata, with the entry points) beside the harness's in the
    venv's site-packages; not its console scripts or bytecode."""
    (tmp_path / "acme_probe").mkdir()
    (tmp_path / "acme_probe" / "__init__.py").write_text(
        "from harness.node.description import Program\n"
        "PROBE = Program('acme-probe', command=('true',))\n"
    )
    info = tmp_path / "acme_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-probe\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[harness.programs]\nprobe = acme_probe:PROBE\n")
    (info / "RECORD").write_text(
        "acme_probe/__init__.py,,\n"
        "acme_probe/__pycache__/__init__.cpython-311.pyc,,\n"
        "acme_probe-1.0.dist-info/METADATA,,\n"
        "acme_probe-1.0.dist-info/entry_points.txt,,\n"
        "acme_probe-1.0.dist-info/RECORD,,\n"
        "../../../bin/acme-probe,,\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (dist,) = images.added_distributions()
    assert dist.name == "acme-probe"
    files = images.site_files(images.package_dir())
    assert sorted(name for name in files if not name.startswith("harness/")) == [
        "acme_probe-1.0.dist-info/METADATA",
        "acme_probe-1.0.dist-info/RECORD",
        "acme_probe-1.0.dist-info/entry_points.txt",
        "acme_probe/__init__.py",
    ]
    assert "harness/node/catalog.py" in files


def test_base_tag_follows_the_apt_sources(tmp_path: Path) -> None:
    one = tmp_path / "one.sources"
    two = tmp_path / "two.sources"
    one.write_text("Types: deb\nURIs: http://deb.debian.org/debian\n")
    two.write_text("Types: deb\nURIs: http://mirror.example/debian\n")
    assert images.base_image_tag(one) == images.base_image_tag(one)
    assert images.base_image_tag(one) != images.base_image_tag(two)
    assert images.base_image_tag(one).startswith("harness-base:")


def test_missing_mmdebstrap_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(images.ImageBuildError, match=r"apt-get install -y mmdebstrap"):
        images.ensure_mmdebstrap()


def test_missing_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(BackendUnavailable) as raised:
        engine()
    message = str(raised.value)
    assert message.startswith(
        "the docker backend needs a running Docker engine: cannot reach unix:///nonexistent.sock ("
    )
    assert message.endswith("); use --backend local")


@needs_docker
def test_harness_images_build_prints_the_tag(
    client: docker.DockerClient, node_image_tags: None
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "images", "build"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip()
    assert tag == images.build_node_image(client=client)
    assert client.images.get(tag).tags == [tag]
