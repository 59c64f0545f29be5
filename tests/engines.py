"""Whether this machine has a Docker engine, and one that is a swarm manager: skip markers for
the tests that need them, saying why they did not run."""

from __future__ import annotations

import pytest

from harness.driver.backends.engine import engine
from harness.driver.backends.swarm import swarm_node_id
from harness.driver.errors import BackendUnavailable


def _docker_missing() -> str | None:
    try:
        engine().close()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def _swarm_missing() -> str | None:
    try:
        client = engine()
    except BackendUnavailable as exc:
        return str(exc)
    try:
        swarm_node_id(client)
    except BackendUnavailable as exc:
        return str(exc)
    finally:
        client.close()
    return None


DOCKER_MISSING = _docker_missing()
SWARM_MISSING = _swarm_missing()


def needs_docker(what: str) -> pytest.MarkDecorator:
    """Skip unless a Docker engine answers; `what` is what then goes untested."""
    return pytest.mark.skipif(
        DOCKER_MISSING is not None, reason=f"NO DOCKER ENGINE: {what} not tested ({DOCKER_MISSING})"
    )


def needs_swarm(what: str) -> pytest.MarkDecorator:
    """Skip unless the Docker engine is a swarm manager; `what` is what then goes untested."""
    return pytest.mark.skipif(
        SWARM_MISSING is not None, reason=f"NO SWARM: {what} not tested ({SWARM_MISSING})"
    )
