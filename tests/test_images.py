"""Node images: built offline, cached by what goes in, a code change costs one layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from harness.driver import images
from harness.driver.errors import BackendUnavailable


def _engine_missing() -> str | None:
    try:
        images.engine().close()
    except BackendUnavailable as exc:
        return str(exc)
    return None


_MISSING = _engine_missing()
needs_docker = pytest.mark.skipif(
    _MISSING is not None, reason=f"NO DOCKER ENGINE: image builds not tested ({_MISSING})"
)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = images.engine()
    yield client
    client.close()


def _copy_tree(destination: Path) -> Path:
    root = images.project_root()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(root / name, destination / name)
    for name in ("harness", "images"):
        shutil.copytree(root / name, destination / name, ignore=ignore)
    return destination


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
def test_code_change_rebuilds_only_the_project_layer(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    source = _copy_tree(tmp_path)
    images.ensure_node_image(source, client=client)
    token = uuid.uuid4().hex
    (source / "harness" / "_image_probe.py").write_text(f'TOKEN = "{token}"\n')
    started = time.monotonic()
    report = images.ensure_node_image(source, client=client)
    took = time.monotonic() - started
    try:
        assert not report.base_built
        layers = report.layer_steps
        assert [s.cached for s in layers] == [True] * (len(layers) - 1) + [False]
        assert layers[-1].instruction.startswith("COPY harness/ ")
        probe = client.containers.run(
            report.tag,
            entrypoint=["/opt/harness/bin/python", "-c"],
            command=["import harness._image_probe as p; print(p.TOKEN)"],
            remove=True,
        )
        assert probe.decode().strip() == token
        print(f"project-layer rebuild took {took:.1f} s")
    finally:
        client.images.remove(report.tag)


def test_dependency_pins_must_be_exact(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools==80.9.0"]\n'
        '[project]\nname = "x"\ndependencies = ["httpx==0.28.1", "cbor2>=6"]\n'
    )
    with pytest.raises(images.ImageBuildError, match=r"pin these exactly.*\['cbor2>=6'\]"):
        images.dependency_pins(tmp_path)


def test_dependency_pins_include_the_build_requirements(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools==80.9.0"]\n'
        '[project]\nname = "x"\ndependencies = ["httpx==0.28.1", "cbor2==6.2.1"]\n'
    )
    assert images.dependency_pins(tmp_path) == [
        "cbor2==6.2.1",
        "httpx==0.28.1",
        "setuptools==80.9.0",
    ]


def test_package_files_skip_bytecode_and_hidden_files(tmp_path: Path) -> None:
    package = tmp_path / "harness"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    (package / ".mypy_cache").mkdir()
    (package / ".mypy_cache" / "x.json").write_text("{}")
    (package / "a.py").write_text("A = 1\n")
    (package / "sub").mkdir()
    (package / "sub" / "b.py").write_text("B = 2\n")
    assert images.package_files(tmp_path) == {
        "harness/a.py": b"A = 1\n",
        "harness/sub/b.py": b"B = 2\n",
    }


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
        images.engine()
    message = str(raised.value)
    assert message.startswith(
        "the docker backend needs a running Docker engine: cannot reach unix:///nonexistent.sock ("
    )
    assert message.endswith("); use --backend local")


@needs_docker
def test_harness_images_build_prints_the_tag(client: docker.DockerClient) -> None:
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
