"""pytest plugin (entry point `pytest11`): options, markers, testnet fixtures, the checks after
every test, time limits, and what a test leaves (see `harness.pytest_plugin.plugin`).

In a test module::

    from harness.pytest_plugin import define_testnet
    testnet = define_testnet(lambda: InternetComputer().add_subnet(...), scope="module")

This module is what pytest loads, and it stays light. pytest rewrites the asserts of every
module of a distribution that has a `pytest11` entry point: it parses, rewrites and compiles
each as it is imported, and where no bytecode is written (`PYTHONDONTWRITEBYTECODE`, a
read-only site-packages) it does so on every start, for the harness's hundred-odd modules the
better part of a second. Their asserts are not tests' asserts, so when pytest registers this
module (its first hook, `pytest_addoption`), the harness's modules are taken off that list, and
only then is the plugin itself (`harness.pytest_plugin.plugin`) imported and registered.
`define_testnet` and the plugin's other public names are imported from it when asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

PLUGIN = "harness.pytest_plugin.plugin"
PUBLIC = ("define_testnet", "thresholds_for", "TestnetFactory", "artifacts_dir")


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the plugin (its own `pytest_addoption` adds the options), its modules left as
    they are written."""
    _leave_the_harness_unrewritten()
    if pluginmanager.get_plugin(PLUGIN) is None:
        pluginmanager.register(importlib.import_module(PLUGIN), PLUGIN)


def _leave_the_harness_unrewritten() -> None:
    """Take the harness's modules (all but those imported already: this one and its package's)
    off pytest's list of modules to rewrite. That list is pytest's own (its assertion-rewriting
    import hook's `_must_rewrite`); a pytest without it rewrites them as before, which is only
    slower."""
    package = __name__.partition(".")[0]
    for finder in sys.meta_path:
        marked = getattr(finder, "_must_rewrite", None)
        if not isinstance(marked, set) or package not in marked:
            continue
        marked.discard(package)
        cache = getattr(finder, "_marked_for_rewrite_cache", None)
        if isinstance(cache, dict):
            for name in [name for name in cache if name.partition(".")[0] == package]:
                del cache[name]


def __getattr__(name: str) -> Any:
    """`define_testnet` and the plugin's other public names, from `harness.pytest_plugin.plugin`
    when first asked for."""
    if name in PUBLIC:
        return getattr(importlib.import_module(PLUGIN), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
