"""Backends run a testnet's nodes; all implement `harness.driver.backends.base.Backend` and
are found through the `harness.backends` entry points (`registry`)."""

from harness.driver.backend_registry import backend_names, get_backend
from harness.driver.backends.base import Backend

__all__ = ["Backend", "backend_names", "get_backend"]
