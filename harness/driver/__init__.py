"""The testnet driver: declare a topology, run it as real nodes, inspect, change and check it.

    from harness.driver import InternetComputer, Subnet, SubnetType, Testnet, Run

    topology = (InternetComputer()
                .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
                .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(4).with_ic_gateway()))
    with Testnet(topology, Run.create()).start() as testnet:
        for node in testnet.topology_snapshot().subnets[1].nodes:
            assert node.await_status_is_healthy(port=80).is_healthy

Everything a test needs is exported here; tests import nothing else from `harness`. Each name is
imported when first asked for, so that importing one module of the driver (as a report's
renderer or a testnet's reaper does) does not import all of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.driver.aio import AsyncTestnet, LoadReport, NodeHealth
    from harness.driver.backend_registry import backend_names
    from harness.driver.backends.base import SPAWN_MODES, BackendOptions
    from harness.driver.errors import (
        BackendUnavailable,
        CapabilityMissing,
        HarnessError,
        LogCheckFailed,
        MetricCheckFailed,
        MetricsScrapeError,
        NodeNotReady,
        NodeStartError,
        TopologyError,
    )
    from harness.driver.faults import Fault, Partition, Pause, ReplicaFaults, Signal, Stop
    from harness.driver.logcheck import DEFAULT_FORBIDDEN, LogMarks, LogPatterns
    from harness.driver.metrics_check import (
        DEFAULT_ORCHESTRATOR_METRICS,
        DEFAULT_REPLICA_METRICS,
        MetricThresholds,
        PrefixClash,
    )
    from harness.driver.node import Node
    from harness.driver.run import Run, sweep
    from harness.driver.testnet import SubnetView, Testnet, TopologySnapshot
    from harness.driver.topology import InternetComputer, Subnet
    from harness.node.catalog import IC_GATEWAY_DOMAIN
    from harness.node.description import Role
    from harness.node.registry import SubnetType
    from harness.node.status import ReplicaHealthStatus, StatusResponse

_EXPORTS = {
    "AsyncTestnet": "harness.driver.aio",
    "BackendOptions": "harness.driver.backends.base",
    "BackendUnavailable": "harness.driver.errors",
    "CapabilityMissing": "harness.driver.errors",
    "DEFAULT_FORBIDDEN": "harness.driver.logcheck",
    "DEFAULT_ORCHESTRATOR_METRICS": "harness.driver.metrics_check",
    "DEFAULT_REPLICA_METRICS": "harness.driver.metrics_check",
    "Fault": "harness.driver.faults",
    "HarnessError": "harness.driver.errors",
    "IC_GATEWAY_DOMAIN": "harness.node.catalog",
    "Role": "harness.node.description",
    "InternetComputer": "harness.driver.topology",
    "LoadReport": "harness.driver.aio",
    "LogCheckFailed": "harness.driver.errors",
    "LogMarks": "harness.driver.logcheck",
    "LogPatterns": "harness.driver.logcheck",
    "MetricCheckFailed": "harness.driver.errors",
    "MetricThresholds": "harness.driver.metrics_check",
    "MetricsScrapeError": "harness.driver.errors",
    "Node": "harness.driver.node",
    "NodeHealth": "harness.driver.aio",
    "NodeNotReady": "harness.driver.errors",
    "NodeStartError": "harness.driver.errors",
    "Partition": "harness.driver.faults",
    "Pause": "harness.driver.faults",
    "PrefixClash": "harness.driver.metrics_check",
    "ReplicaFaults": "harness.driver.faults",
    "ReplicaHealthStatus": "harness.node.status",
    "Run": "harness.driver.run",
    "SPAWN_MODES": "harness.driver.backends.base",
    "Signal": "harness.driver.faults",
    "StatusResponse": "harness.node.status",
    "Stop": "harness.driver.faults",
    "Subnet": "harness.driver.topology",
    "SubnetType": "harness.node.registry",
    "SubnetView": "harness.driver.testnet",
    "Testnet": "harness.driver.testnet",
    "TopologyError": "harness.driver.errors",
    "TopologySnapshot": "harness.driver.testnet",
    "backend_names": "harness.driver.backend_registry",
    "sweep": "harness.driver.run",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_FORBIDDEN",
    "DEFAULT_ORCHESTRATOR_METRICS",
    "DEFAULT_REPLICA_METRICS",
    "IC_GATEWAY_DOMAIN",
    "SPAWN_MODES",
    "AsyncTestnet",
    "BackendOptions",
    "BackendUnavailable",
    "CapabilityMissing",
    "Fault",
    "HarnessError",
    "InternetComputer",
    "LoadReport",
    "LogCheckFailed",
    "LogMarks",
    "LogPatterns",
    "MetricCheckFailed",
    "MetricThresholds",
    "MetricsScrapeError",
    "Node",
    "NodeHealth",
    "NodeNotReady",
    "NodeStartError",
    "Partition",
    "Pause",
    "PrefixClash",
    "ReplicaFaults",
    "ReplicaHealthStatus",
    "Role",
    "Run",
    "Signal",
    "StatusResponse",
    "Stop",
    "Subnet",
    "SubnetType",
    "SubnetView",
    "Testnet",
    "TopologyError",
    "TopologySnapshot",
    "backend_names",
    "sweep",
]
