"""The live state of one replica: health, certified height, faults and metrics, kept in step."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

from harness.node.replica.config import Config
from harness.node.replica.faults import Faults, FaultsFile
from harness.node.replica.health import Health
from harness.node.replica.metrics import ReplicaMetrics
from harness.node.status import IC_API_VERSION, StatusResponse, encode_status

# Requests and scrapes refresh the state themselves; the tick only brings health transitions
# (and their log lines) and a changed faults file in while nobody asks. Each wakeup costs CPU in
# every replica of a testnet: hundreds of them share two cores.
TICK_SECONDS = 0.5


class Runtime:
    """What the API and metrics apps read; `refresh()` brings it up to the clock and faults."""

    def __init__(
        self,
        config: Config,
        root_key: bytes,
        faults_file: FaultsFile,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.root_key = root_key
        self.faults_file = faults_file
        self.metrics = ReplicaMetrics(config.replica_version, config.node_id, config.subnet_id)
        self._clock = clock
        self.health = Health(
            clock(), config.warmup_seconds, config.block_interval, self.metrics.record_transition
        )
        # The real replica reports the sha256 of its binary; the stub has no binary of its
        # own, so it hashes the version string: equal versions, equal hashes.
        self.impl_hash = hashlib.sha256(config.replica_version.encode()).hexdigest()
        self._status: StatusResponse | None = None
        self._encoded_status = b""

    def refresh(self) -> Faults:
        """Re-read faults (rate-limited), advance health and height; return the faults."""
        faults = self.faults_file.faults
        self.metrics.raise_critical_errors_to(faults.critical_errors)
        self.health.update(self._clock(), faults.unhealthy)
        return faults

    def status(self) -> StatusResponse:
        self.refresh()
        return StatusResponse(
            ic_api_version=IC_API_VERSION,
            root_key=self.root_key,
            impl_version=self.config.replica_version,
            impl_hash=self.impl_hash,
            replica_health_status=self.health.state.value,
            certified_height=self.health.certified_height,
        )

    def encoded_status(self) -> bytes:
        """`status()` in CBOR, encoded again only when it changed (health or height)."""
        status = self.status()
        if status != self._status:
            self._status = status
            self._encoded_status = encode_status(status)
        return self._encoded_status

    async def tick_forever(self) -> None:
        """Refresh periodically so faults and transitions show in metrics without requests."""
        while True:
            self.refresh()
            await asyncio.sleep(TICK_SECONDS)
