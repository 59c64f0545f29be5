"""Bringing a test's testnet back from its artifacts (`harness up --from artifacts/<test>/<id>`),
to look at a CI failure on one's own machine, on any backend.

What comes back: the topology (the record kept in the artifacts, `testnet.json`), the
registry's last version (its content written over the new testnet's first version, the nodes'
addresses the new ones), and, where the artifacts have a Prometheus TSDB (`prometheus/data`),
what that Prometheus scraped, served again by the new testnet's Prometheus beside what it
scrapes. What cannot come back is said (`Replay.lost`): the programs' state in memory and on
disk, requests in flight, the faults in force, the old logs (they stay in the artifacts).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from harness.driver.errors import HarnessError
from harness.driver.testnet import RECORD_FILE, Testnet
from harness.driver.topology import InternetComputer, topology_from_document
from harness.node.registry import LocalStore, RegistryFormatError, RegistrySnapshot


@dataclass(frozen=True)
class Replay:
    """What a test's artifacts of one testnet hold to bring it back."""

    directory: Path
    testnet_id: str
    topology: InternetComputer
    last: RegistrySnapshot
    tsdb: Path | None

    @classmethod
    def load(cls, directory: Path) -> Replay:
        """The artifacts of one testnet (`artifacts/<test>/<testnet id>`); `HarnessError`
        naming what is missing or wrong."""
        record_path = directory / RECORD_FILE
        if not record_path.is_file():
            found = sorted(path.parent.name for path in directory.glob(f"*/{RECORD_FILE}"))
            hint = f"; it holds testnets: {', '.join(found)}" if found else ""
            raise HarnessError(
                f"--from {directory}: no {RECORD_FILE} there (the artifacts of one testnet: "
                f"artifacts/<test>/<testnet id>){hint}"
            )
        try:
            record = json.loads(record_path.read_text())
            topology = topology_from_document(record["topology"])
        except (ValueError, KeyError, TypeError, HarnessError) as exc:
            raise HarnessError(f"--from {directory}: {record_path} is unusable: {exc}") from None
        try:
            last = LocalStore(directory / "registry").read_latest()
        except RegistryFormatError as exc:
            raise HarnessError(f"--from {directory}: its registry is unusable: {exc}") from None
        if last is None:
            raise HarnessError(f"--from {directory}: its registry has no version")
        tsdb = directory / "prometheus" / "data"
        recorded = tsdb if tsdb.is_dir() and any(tsdb.iterdir()) else None
        if recorded is not None:
            topology.with_prometheus()
        return cls(directory, str(record.get("testnet", directory.name)), topology, last, recorded)

    def prepare(self, testnet: Testnet) -> None:
        """Before the new testnet starts: its Prometheus starts with the recorded TSDB."""
        testnet.recorded_metrics = self.tsdb

    def apply(self, testnet: Testnet, timeout: float = 60.0) -> list[str]:
        """After it started: the registry's last version of the artifacts, the nodes' addresses
        those of the new testnet, written and waited for; return what was brought back."""
        current = testnet.registry.latest()
        nodes = {
            node_id: dataclasses.replace(record, ip=current.nodes[node_id].ip)
            for node_id, record in self.last.nodes.items()
            if node_id in current.nodes
        }
        content = dataclasses.replace(self.last, version=current.version + 1, nodes=nodes)
        if dataclasses.replace(content, version=current.version) == current:
            brought = f"registry: version {self.last.version}'s content is the first version's"
        else:
            version = testnet.write_registry(
                content, f"version {self.last.version} of {self.testnet_id}'s artifacts", timeout
            )
            brought = (
                f"registry: the content of {self.testnet_id}'s version {self.last.version}, "
                f"as version {version}"
            )
        lines = [f"brought back from {self.directory}: the topology of {self.testnet_id}", brought]
        if self.tsdb is not None:
            lines.append(
                f"metrics: what {self.testnet_id}'s Prometheus scraped, served by this testnet's "
                f'Prometheus ({testnet.prometheus}; its series carry testnet="{self.testnet_id}")'
            )
        return lines

    @property
    def lost(self) -> list[str]:
        """What a replay cannot bring back."""
        return [
            "not brought back: the programs' state (in memory and in their data directories), "
            "requests in flight, the faults that were in force, the old processes' logs (they "
            f"stay in {self.directory / 'nodes'})",
        ]
