"""Backends run a testnet's nodes; all implement `harness.driver.backends.base.Backend`."""

from harness.driver.backends.base import Backend, backend_names, get_backend

__all__ = ["Backend", "backend_names", "get_backend"]
