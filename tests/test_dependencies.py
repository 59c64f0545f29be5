"""The dependencies: ranges in pyproject.toml, exact pins in the lock files, and the imports of
the code all agree.

- every distribution that `harness/` imports is declared in `[project].dependencies`, as a
  compatible range (a lower bound, no exact pin), so the harness installs beside other pins;
- the node programs (`harness/node`) import only what the node image installs
  (`node_image/requirements.in`), and nothing of the driver;
- requirements.lock pins every declared dependency at a version its range allows, with hashes,
  and the node lock pins the same versions.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from harness.driver.backends import images

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"
NODE_IMAGE = PACKAGE / "driver" / "backends" / "node_image"
# Installed into nodes although harness.node does not import them by name, and why.
NODE_INDIRECT: dict[str, str] = {}


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared() -> dict[str, Requirement]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    requirements = (Requirement(text) for text in project["dependencies"])
    return {_normalise(r.name): r for r in requirements}


def _normalise(name: str) -> str:
    return images._normalise(name)


def _imported_distributions(directory: Path) -> dict[str, set[str]]:
    """Distribution name -> the files under `directory` that import it directly."""
    owners = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "harness":
                    continue
                for distribution in owners.get(top, [f"<no distribution for {top}>"]):
                    found.setdefault(_normalise(distribution), set()).add(
                        str(path.relative_to(ROOT))
                    )
    return found


def test_every_imported_distribution_is_declared() -> None:
    undeclared = {
        name: sorted(files)
        for name, files in _imported_distributions(PACKAGE).items()
        if name not in _declared()
    }
    assert undeclared == {}


def test_dependencies_are_compatible_ranges_not_pins() -> None:
    for name, requirement in _declared().items():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators, f"{name}: give a tested lower bound ({requirement})"
        assert not operators & {"==", "==="}, f"{name}: an exact pin belongs in the lock"


def test_the_node_programs_import_only_what_the_node_image_installs() -> None:
    node_requirements = {
        _normalise(line.strip())
        for line in (NODE_IMAGE / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    imported = _imported_distributions(PACKAGE / "node")
    assert set(imported) <= node_requirements, "harness/node imports what no node has"
    unexplained = node_requirements - set(imported) - set(NODE_INDIRECT)
    assert unexplained == set(), "installed into nodes for no reason"
    assert node_requirements <= set(_declared())


def test_the_node_programs_never_import_the_driver() -> None:
    offenders = []
    for path in (PACKAGE / "node").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.startswith(("harness.driver", "harness.cli", "harness.pytest_plugin"))
            ]
    assert offenders == []


@pytest.mark.parametrize(
    "lock", ["requirements.lock", "harness/driver/backends/node_image/requirements.lock"]
)
def test_the_locks_pin_allowed_versions_with_hashes(lock: str) -> None:
    pins = images.locked_versions((ROOT / lock).read_text())  # refuses unhashed or loose pins
    for name, requirement in _declared().items():
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{lock}: {name}=={pins[name]} is outside {requirement}; run scripts/lock"
            )


def test_the_main_lock_covers_every_dependency_and_the_node_lock_agrees() -> None:
    main = images.locked_versions((ROOT / "requirements.lock").read_text())
    node = images.locked_versions((NODE_IMAGE / "requirements.lock").read_text())
    assert set(_declared()) <= set(main), "a dependency is missing from requirements.lock"
    assert {name: main.get(name) for name in node} == node, "the locks disagree; scripts/lock"
