"""The registry every node reads: versioned, immutable snapshots of the testnet's records.

Format (the one place it is written down)
-----------------------------------------
A registry *store* is a directory holding one file per version, named with the version
zero-padded to 20 digits: ``00000000000000000001.json``, ``00000000000000000002.json``, ...
Versions start at 1 and grow by one. A file is never changed after it was written: a writer
writes a temporary file in the same directory (name starting with ``.``), fsyncs it and
hard-links it to its final name, which fails if that version exists already; readers ignore
every name that is not a version. Each file is a complete snapshot (not a delta)::

    {
      "version": 3,
      "subnets": {
        "<subnet id>": {"subnet_type": "system" | "application" | "verified_application"
                                       | "cloud_engine",
                        "members": ["<node id>", ...],
                        "replica_version": "<version>"}
      },
      "nodes": {
        "<node id>": {"ip": "127.1.0.2", "http_port": 8080, "metrics_port": 9090,
                      "domain": "<fqdn>" | null, "features": ["ic_gateway", ...]}
      },
      "api_boundary_nodes": {"<node id>": {"version": "<version>"}},
      "unassigned_nodes_version": "<version>"
    }

Unknown keys, wrong types, members that are not nodes, a node in two subnets, or an API
boundary node that is also a subnet member are format errors (`RegistryFormatError`), raised
with the file and the key path that is wrong. Node features are per-node launch gates; today
one exists, ``ic_gateway`` (run the ic-gateway side-car if the node is on a cloud engine).
"""

from harness.node.registry.client import RegistryClient
from harness.node.registry.records import (
    ApiBoundaryNodeRecord,
    NodeRecord,
    RegistryFormatError,
    RegistrySnapshot,
    SubnetRecord,
    SubnetType,
)
from harness.node.registry.store import LocalStore

__all__ = [
    "ApiBoundaryNodeRecord",
    "LocalStore",
    "NodeRecord",
    "RegistryClient",
    "RegistryFormatError",
    "RegistrySnapshot",
    "SubnetRecord",
    "SubnetType",
]
