"""Node images for the docker and swarm backends, built offline and cached by a hash of what
goes in. Everything a build needs ships with the package (`node_image/` beside this module), so
an installed harness builds images as well as a checkout does.

Three layers, each rebuilt only when its inputs change:

1. base `harness-base:<hash>`: a minimal Debian rootfs (python3, python3-venv, tini,
   ca-certificates, microsocks, and the packages node programs' descriptions ask for,
   `Program.packages`) made by mmdebstrap from the host's apt sources and `docker import`ed. Its
   hash covers the recipe, the suite, the architecture and the sources file. About a minute,
   once per machine.
2. dependencies (hash: the node lock file, the entrypoint, the programs' launchers): the wheels
   pinned (with hashes) by `node_image/requirements.lock`, downloaded on the host into a cached
   wheelhouse (`pip download --only-binary=:all:` for Debian's CPython 3.11) and installed into a
   venv at /opt/harness with `pip install --no-index --require-hashes`; pip itself is removed
   again. Only what the node programs import: no pytest, testcontainers, docker or rich.
3. project (hash: the files of `harness.node`, and of every distribution installed beside the
   harness that adds node programs through the entry point group `harness.programs`, its
   metadata included): the node programs' package and those distributions copied into the
   venv, with .pyc compiled on the host. One step, so a code change costs one layer; a change
   to the driver costs none. Such a distribution brings no dependencies of its own: a node has
   the node lock's.

The node image `harness-node:<hash>` hashes all of that and the Dockerfile; when that tag exists
nothing is built at all.

The Prometheus image `harness-prometheus:<hash>` (a testnet's Prometheus on docker and swarm,
`prometheus_container.py`) is a rootfs made the same way as the base, with Debian's
`prometheus` package, less what its server never reads (`PROMETHEUS_EXCLUDES`).

No registry is involved: the base is imported, the build never pulls,
nothing inside the build touches the network. Builds are serialised by a file lock in the cache
directory (`HARNESS_CACHE_DIR`, default `~/.cache/harness`), which also holds the wheelhouses.
"""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import platform
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests
from rich.console import Console

import harness
from harness.driver.backends.engine import engine, short
from harness.driver.errors import HarnessError
from harness.node.catalog import ENTRY_POINT_GROUP
from harness.node.catalog import PROGRAMS as CATALOG
from harness.node.programs import PROGRAMS

log = logging.getLogger(__name__)

BASE_REPOSITORY = "harness-base"
NODE_REPOSITORY = "harness-node"
SUITE = "bookworm"
TARGET_PYTHON = "3.11"  # the python3 of SUITE: the wheelhouse and the .pyc are made for it
SITE_PACKAGES = f"/opt/harness/lib/python{TARGET_PYTHON}/site-packages"  # as in Dockerfile.node
# microsocks: the swarm backend's access proxy (a SOCKS5 server) runs from this image too.
BASE_PACKAGES = ("python3", "python3-venv", "tini", "ca-certificates", "microsocks")
PROMETHEUS_REPOSITORY = "harness-prometheus"
# The Prometheus server beside a docker or swarm testnet (`prometheus_container.py`): Debian's
# package alone, its own image so that no node carries it.
PROMETHEUS_PACKAGES = ("prometheus",)
# Left out of the Prometheus image (dpkg's path-exclude): the time zone data of moment-timezone
# (214 MB; its web UI loads moment-timezone-with-data.min.js, which stays), manuals, locales.
PROMETHEUS_EXCLUDES = (
    "/usr/share/javascript/moment-timezone/data/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/doc/*",
)
HOST_APT_SOURCES = (
    Path("/etc/apt/sources.list.d/debian.sources"),
    Path("/etc/apt/sources.list"),
)
RECIPE_PACKAGE = "harness.driver.backends.node_image"
DOCKERFILE = "Dockerfile"
ENTRYPOINT = "entrypoint"
LOCK = "requirements.lock"
NODE_PACKAGE = "node"  # the subpackage of `harness` a node runs; nothing else goes in
VENV_PYTHON = "/opt/harness/bin/python3"
_SKIPPED_PARTS = ("__pycache__",)
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_LAYER_INSTRUCTIONS = ("RUN", "COPY", "ADD")

Status = Callable[[str], None]


class ImageBuildError(HarnessError):
    """A node image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class BuildStep:
    """One Dockerfile step of a build, and whether the builder reused its cached layer."""

    number: int
    instruction: str
    cached: bool


@dataclass
class BuildReport:
    """What `ensure_node_image` did: the tag, whether the base was made, the steps that ran."""

    tag: str
    base_built: bool = False
    steps: list[BuildStep] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def built(self) -> bool:
        return self.base_built or bool(self.steps)

    @property
    def layer_steps(self) -> list[BuildStep]:
        """The steps that make a filesystem layer (the costly ones)."""
        return [s for s in self.steps if s.instruction.split(" ", 1)[0] in _LAYER_INSTRUCTIONS]


def package_dir() -> Path:
    """The directory of the `harness` package this module belongs to (installed or a checkout)."""
    return Path(harness.__file__).resolve().parent


def cache_dir() -> Path:
    configured = os.environ.get("HARNESS_CACHE_DIR")
    if configured:
        path = Path(configured)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "harness"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# Base image.


def ensure_mmdebstrap() -> str:
    """The path of mmdebstrap, installing it with apt-get when missing and running as root."""
    found = shutil.which("mmdebstrap")
    if found:
        return found
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the node base image needs mmdebstrap: install it with "
            "`sudo apt-get install -y mmdebstrap` (Debian/Ubuntu package 'mmdebstrap')"
        )
    log.warning("mmdebstrap is missing: installing it with apt-get")
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "mmdebstrap"]):
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
        if result.returncode != 0:
            raise ImageBuildError(
                f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()[-800:]}"
            )
    found = shutil.which("mmdebstrap")
    if not found:
        raise ImageBuildError("apt-get installed mmdebstrap but it is not on PATH")
    return found


def host_apt_sources() -> Path:
    """The host's apt sources file the base image is made from (`HARNESS_APT_SOURCES`
    overrides)."""
    configured = os.environ.get("HARNESS_APT_SOURCES")
    candidates = [Path(configured)] if configured else list(HOST_APT_SOURCES)
    for path in candidates:
        if path.is_file() and any(
            line.startswith(("deb ", "Types:")) for line in path.read_text().splitlines()
        ):
            return path
    raise ImageBuildError(
        f"no apt sources file with Debian {SUITE} mirrors found (looked at "
        f"{', '.join(map(str, candidates))}); set HARNESS_APT_SOURCES to one"
    )


def mmdebstrap_args(packages: tuple[str, ...], excludes: tuple[str, ...] = ()) -> list[str]:
    return [
        "--variant=minbase",
        f"--include={','.join(packages)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in excludes),
        "--format=tar",
    ]


def rootfs_image_tag(
    repository: str, packages: tuple[str, ...], sources: Path, excludes: tuple[str, ...] = ()
) -> str:
    """The tag of a Debian rootfs image with `packages`: a hash of everything that makes it."""
    recipe = [SUITE, platform.machine(), mmdebstrap_args(packages, excludes), sources.read_text()]
    return f"{repository}:{_digest(recipe)}"


def base_packages() -> tuple[str, ...]:
    """The base image's Debian packages: `BASE_PACKAGES` and those the node programs need
    (`Program.packages`, e.g. a side-car's server)."""
    needed = {package for program in CATALOG for package in program.packages}
    return (*BASE_PACKAGES, *sorted(needed - set(BASE_PACKAGES)))


def base_image_tag(sources: Path) -> str:
    return rootfs_image_tag(BASE_REPOSITORY, base_packages(), sources)


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(client: docker.DockerClient, status: Status) -> tuple[str, bool]:
    """The base image's tag, and whether it had to be made now."""
    return ensure_rootfs_image(client, status, BASE_REPOSITORY, base_packages())


def ensure_rootfs_image(
    client: docker.DockerClient,
    status: Status,
    repository: str,
    packages: tuple[str, ...],
    excludes: tuple[str, ...] = (),
) -> tuple[str, bool]:
    """The tag of a minimal Debian rootfs with `packages` (without the files `excludes`
    matches), made by mmdebstrap from the host's apt sources and `docker import`ed as
    `repository:<hash>`; and whether it was made now."""
    sources = host_apt_sources()
    tag = rootfs_image_tag(repository, packages, sources, excludes)
    if _image_exists(client, tag):
        return tag, False
    mmdebstrap = ensure_mmdebstrap()
    with tempfile.TemporaryDirectory(prefix=f"{repository}-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        argv = [mmdebstrap, *mmdebstrap_args(packages, excludes), SUITE, str(rootfs), str(sources)]
        status(f"{tag}: mmdebstrap {SUITE}")
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert process.stderr is not None
        lines: list[str] = []
        for line in process.stderr:
            lines.append(line.rstrip())
            status(f"{tag}: mmdebstrap: {line.strip()}")
        if process.wait() != 0:
            raise ImageBuildError(
                f"mmdebstrap failed ({process.returncode}) making {tag}: " + "\n".join(lines[-15:])
            )
        status(f"{tag}: docker import")
        client.api.import_image_from_file(
            str(rootfs), repository=repository, tag=tag.partition(":")[2]
        )
    if not _image_exists(client, tag):
        raise ImageBuildError(f"docker import did not produce {tag}")
    return tag, True


# Dependencies.


_LOCKED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked_versions(lock: str) -> dict[str, str]:
    """The `name==version` pins of a lock file, by normalised name; `ImageBuildError` when a
    requirement in it is not pinned exactly or carries no hash (the image must be reproducible)."""
    pins: dict[str, str] = {}
    for line in lock.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _LOCKED.match(line)
        if match is None or "--hash=" not in line:
            raise ImageBuildError(
                f"{LOCK}: {line.split()[0]!r} is not pinned as name==version with hashes; "
                "regenerate the lock with scripts/lock"
            )
        pins[_normalise(match.group(1))] = match.group(2)
    if not pins:
        raise ImageBuildError(f"{LOCK} pins nothing")
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_platforms() -> list[str]:
    """manylinux tags Debian's glibc (2.36) runs, newest first; pip does not expand them."""
    arch = platform.machine()
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 4, -1)]
    return [*tags, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def wheelhouse(lock: bytes, status: Status) -> Path:
    """A directory of the wheels `lock` pins (hash-checked), downloaded once per lock."""
    key = _digest(hashlib.sha256(lock).hexdigest(), TARGET_PYTHON, platform.machine())
    target = cache_dir() / "wheelhouse" / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    status(f"downloading the {len(locked_versions(lock.decode()))} wheels of the node lock")
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    requirements = tmp / LOCK
    requirements.write_bytes(lock)
    abi = "cp" + TARGET_PYTHON.replace(".", "")
    argv = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--require-hashes", "--only-binary=:all:", "--dest", str(tmp / "wheels"),
        "--python-version", TARGET_PYTHON, "--implementation", "cp",
        "--abi", abi, "--abi", "abi3", "--abi", "none",
        *(arg for tag in _wheel_platforms() for arg in ("--platform", tag)),
        "--requirement", str(requirements),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = (
            f" ({sys.executable} has no pip: `{sys.executable} -m ensurepip` adds it)"
            if "No module named pip" in result.stderr
            else ""
        )
        raise ImageBuildError(
            f"pip download of the node image's wheels failed ({result.returncode}){hint}: "
            f"{result.stderr.strip()[-1500:]}"
        )
    os.rename(tmp / "wheels", target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


# The project.


def package_files(package: Path) -> dict[str, bytes]:
    """The files a node runs from the `harness` package at `package`: its `__init__.py` and the
    `harness.node` subpackage, by path relative to the package's parent (`harness/...`)."""
    files: dict[str, bytes] = {}
    init = package / "__init__.py"
    if init.is_file():
        files["harness/__init__.py"] = init.read_bytes()
    for path in sorted((package / NODE_PACKAGE).rglob("*")):
        relative = path.relative_to(package)
        if (
            not path.is_file()
            or any(part in _SKIPPED_PARTS or part.startswith(".") for part in relative.parts)
            or path.suffix in _SKIPPED_SUFFIXES
        ):
            continue
        files[f"harness/{relative.as_posix()}"] = path.read_bytes()
    if not any(name.startswith(f"harness/{NODE_PACKAGE}/") for name in files):
        raise ImageBuildError(f"{package} holds no harness/{NODE_PACKAGE} package to put in a node")
    return files


def node_programs() -> dict[str, str]:
    """The programs a node image gets a launcher for, name -> `module:function`: every node
    program with a Python entry point (`harness.node.programs.PROGRAMS`: the harness's, those
    of the distributions installed beside it) and the registry service."""
    return dict(PROGRAMS)


def added_distributions() -> list[importlib.metadata.Distribution]:
    """The distributions installed beside the harness that add node programs (entry point
    group `harness.programs`), each once."""
    found: dict[str, importlib.metadata.Distribution] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        if dist is None:
            raise ImageBuildError(
                f"entry point {entry_point.name} = {entry_point.value}: its distribution is not "
                "known, so a node image cannot take it in"
            )
        if _normalise(dist.name) != "harness":
            found.setdefault(_normalise(dist.name), dist)
    return [found[name] for name in sorted(found)]


def distribution_files(dist: importlib.metadata.Distribution) -> dict[str, bytes]:
    """The files of an installed distribution that go into a node's site-packages (its
    metadata with the entry points included), by path relative to site-packages; what it
    installed elsewhere (console scripts) and bytecode stay out."""
    files: dict[str, bytes] = {}
    for name in dist.files or ():
        relative = PurePosixPath(name.as_posix())
        if relative.is_absolute() or ".." in relative.parts:
            continue
        if any(part in _SKIPPED_PARTS for part in relative.parts) or (
            relative.suffix in _SKIPPED_SUFFIXES
        ):
            continue
        path = Path(str(dist.locate_file(name)))
        if path.is_file():
            files[relative.as_posix()] = path.read_bytes()
    if not files:
        raise ImageBuildError(f"the distribution {dist.name} has no files to put in a node image")
    return files


def launcher(target: str) -> bytes:
    """A console script for the image's venv that runs `module:function`, as pip writes them."""
    module, _, function = target.partition(":")
    return (
        f"#!{VENV_PYTHON}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    ).encode()


def site_files(package: Path) -> dict[str, bytes]:
    """What goes into a node's site-packages: the `harness` package at `package`
    (`package_files`) and the distributions that add node programs (`added_distributions`)."""
    files = package_files(package)
    for dist in added_distributions():
        files.update(distribution_files(dist))
    return files


def _files_digest(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class NodeRecipe:
    """Everything that goes into a node image, and the tag that names it."""

    base_tag: str
    lock: bytes
    launchers: dict[str, bytes]
    files: dict[str, bytes]
    dockerfile: bytes
    entrypoint: bytes

    @property
    def deps_hash(self) -> str:
        """What the dependency step depends on: a change here reinstalls the wheels."""
        inputs = {"lock": self.lock, "entrypoint": self.entrypoint}
        inputs.update({f"bin/{name}": content for name, content in self.launchers.items()})
        return _digest(self.base_tag, TARGET_PYTHON, _files_digest(inputs))

    @property
    def project_hash(self) -> str:
        return _files_digest(self.files)

    @property
    def tag(self) -> str:
        recipe = _files_digest({"Dockerfile": self.dockerfile})
        return f"{NODE_REPOSITORY}:{_digest(self.deps_hash, self.project_hash, recipe)}"


def node_recipe(base_tag: str, package: Path | None = None) -> NodeRecipe:
    """The recipe of the node image for the `harness` package at `package` (default: this one)."""
    resources = importlib.resources.files(RECIPE_PACKAGE)
    lock = resources.joinpath(LOCK).read_bytes()
    locked_versions(lock.decode())
    return NodeRecipe(
        base_tag=base_tag,
        lock=lock,
        launchers={name: launcher(target) for name, target in sorted(node_programs().items())},
        files={
            **package_files(package or package_dir()),
            **{
                name: data
                for d in added_distributions()
                for name, data in distribution_files(d).items()
            },
        },
        dockerfile=resources.joinpath(DOCKERFILE).read_bytes(),
        entrypoint=resources.joinpath(ENTRYPOINT).read_bytes(),
    )


def _write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _write_context(context: Path, recipe: NodeRecipe, wheels: Path) -> None:
    """The build context: `deps/` for the dependency step, `site/` (what goes into the venv's
    site-packages) for the last one."""
    (context / "Dockerfile").write_bytes(recipe.dockerfile)
    deps = context / "deps"
    shutil.copytree(wheels, deps / "wheels")
    (deps / LOCK).write_bytes(recipe.lock)
    _write_files(deps, {ENTRYPOINT: recipe.entrypoint})
    _write_files(deps / "bin", recipe.launchers)
    for path in [deps / ENTRYPOINT, *(deps / "bin").iterdir()]:
        path.chmod(0o755)
    _write_files(context / "site", recipe.files)
    if sys.version_info[:2] == tuple(map(int, TARGET_PYTHON.split("."))):
        # Same bytecode format as the image's python: ship .pyc so that nodes start without
        # compiling (they may run as a user who cannot write __pycache__ there).
        compileall.compile_dir(
            context / "site",
            ddir=SITE_PACKAGES,
            quiet=2,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


def _run_build(
    client: docker.DockerClient, context: Path, recipe: NodeRecipe, status: Status
) -> list[BuildStep]:
    steps: list[BuildStep] = []
    current: tuple[int, str] | None = None
    cached = False
    output: list[str] = []

    def close_step() -> None:
        if current is not None:
            steps.append(BuildStep(current[0], current[1], cached))

    chunks: Iterator[dict[str, Any]] = client.api.build(
        path=str(context),
        tag=recipe.tag,
        buildargs={"BASE_IMAGE": recipe.base_tag},
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    for chunk in chunks:
        if "error" in chunk:
            detail = "\n".join(output[-20:])
            step = f"step {current[0]} ({current[1]})" if current else "the build"
            raise ImageBuildError(f"{recipe.tag}: {step} failed: {chunk['error']}\n{detail}")
        for line in str(chunk.get("stream", "")).splitlines():
            line = line.strip()
            if not line:
                continue
            output.append(line)
            if line.startswith("Step ") and " : " in line:
                close_step()
                counter, _, instruction = line[len("Step ") :].partition(" : ")
                current, cached = (int(counter.split("/")[0]), instruction), False
                status(f"{recipe.tag}: {line}")
            elif line == "---> Using cache":
                cached = True
    close_step()
    return steps


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    with (cache_dir() / "images.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _status(console: Console | None, what: str = "the node image") -> Iterator[Status]:
    """A rich spinner showing the current step on a terminal, one line per step elsewhere
    (CI logs); opened only when something is built."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield lambda text: console.log(text, highlight=False)
        return
    with console.status(f"preparing {what}") as spinner:

        def update(text: str) -> None:
            log.debug("%s", text)
            spinner.update(text)

        yield update


def ensure_node_image(
    package: Path | None = None,
    client: docker.DockerClient | None = None,
    console: Console | None = None,
) -> BuildReport:
    """Make sure the node image of the `harness` package at `package` (default: this one)
    exists; build what is missing."""
    if client is None:
        with contextlib.closing(engine()) as own:
            return ensure_node_image(package, own, console)
    started = time.monotonic()
    sources = host_apt_sources()
    quick = node_recipe(base_image_tag(sources), package)
    if _image_exists(client, quick.tag):
        return BuildReport(quick.tag)
    with _build_lock(), _status(console) as status:
        base_tag, base_built = ensure_base_image(client, status)
        recipe = node_recipe(base_tag, package)
        report = BuildReport(recipe.tag, base_built)
        if not _image_exists(client, recipe.tag):
            wheels = wheelhouse(recipe.lock, status)
            with tempfile.TemporaryDirectory(prefix="harness-node-image-") as tmp:
                _write_context(Path(tmp), recipe, wheels)
                report.steps = _run_build(client, Path(tmp), recipe, status)
            if not _image_exists(client, recipe.tag):
                raise ImageBuildError(f"the build finished without tagging {recipe.tag}")
    report.seconds = time.monotonic() - started
    if report.built:
        layers = report.layer_steps
        rebuilt = sum(not step.cached for step in layers)
        (console or Console(stderr=True)).log(
            f"built {report.tag} in {report.seconds:.1f} s "
            f"({'new base, ' if base_built else ''}{rebuilt} of {len(layers)} layers rebuilt)",
            highlight=False,
        )
    return report


def build_node_image(
    package: Path | None = None,
    client: docker.DockerClient | None = None,
    console: Console | None = None,
) -> str:
    """The tag of the node image of the `harness` package at `package` (default: this one),
    built first if it does not exist."""
    return ensure_node_image(package, client, console).tag


def build_prometheus_image(client: docker.DockerClient, console: Console | None = None) -> str:
    """The tag of the Prometheus image (Debian's `prometheus` on a minimal rootfs), made first
    if it does not exist (once per machine, like the node image's base)."""
    recipe = (PROMETHEUS_REPOSITORY, PROMETHEUS_PACKAGES)
    tag = rootfs_image_tag(*recipe, host_apt_sources(), PROMETHEUS_EXCLUDES)
    if _image_exists(client, tag):
        return tag
    started = time.monotonic()
    with _build_lock(), _status(console, "the Prometheus image") as status:
        tag, built = ensure_rootfs_image(client, status, *recipe, PROMETHEUS_EXCLUDES)
    if built:
        (console or Console(stderr=True)).log(
            f"built {tag} in {time.monotonic() - started:.1f} s", highlight=False
        )
    return tag


IMAGE_REGISTRY_ENV = "HARNESS_IMAGE_REGISTRY"
"""A container registry (`HOST:PORT`) the swarm backend pushes the node image to and runs it
from, so that every machine of the swarm can pull it."""

_REGISTRY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")


def push_node_image(
    registry: str, client: docker.DockerClient | None = None, console: Console | None = None
) -> str:
    """Build the node image if needed, tag it `REGISTRY/harness-node:<hash>` and push it to
    `registry` (`HOST[:PORT]`, as a docker engine names a registry); return that reference."""
    if not _REGISTRY.fullmatch(registry):
        raise HarnessError(
            f"registry {registry!r}: expected HOST or HOST:PORT (no scheme, no path), "
            "e.g. 10.0.0.5:5000"
        )
    client = client or engine()
    tag = build_node_image(client=client, console=console)
    repository, _, version = f"{registry}/{tag}".rpartition(":")
    client.images.get(tag).tag(repository, version)
    try:
        for line in client.api.push(repository, version, stream=True, decode=True):
            if "error" in line:
                raise ImageBuildError(f"pushing {repository}:{version}: {line['error']}")
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise ImageBuildError(f"pushing {repository}:{version}: {short(exc)}") from None
    return f"{repository}:{version}"
