"""The testnet driver: declare a topology, run it as real nodes, inspect, change and check it.

    from harness.driver import InternetComputer, Subnet, SubnetType, Testnet, Run

    topology = (InternetComputer()
                .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
                .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(4).with_ic_gateway()))
    with Testnet(topology, Run.create()).start() as testnet:
        for node in testnet.topology_snapshot().subnets[1].nodes:
            assert node.await_status_is_healthy(port=80).is_healthy

Everything a test needs is exported here; tests import nothing else from `harness`.
"""

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
from harness.driver.node import IC_GATEWAY_DOMAIN, Node
from harness.driver.run import Run, sweep
from harness.driver.testnet import SubnetView, Testnet, TopologySnapshot
from harness.driver.topology import InternetComputer, Subnet
from harness.node.registry import SubnetType
from harness.node.status import ReplicaHealthStatus, StatusResponse

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
