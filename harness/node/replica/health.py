"""The replica's health lifecycle and certified height, as functions of time and faults.

    starting --(half the warm-up)--> waiting_for_certified_state --(warm-up)--> healthy

The `unhealthy` fault holds the replica in (or sends it back to) waiting_for_certified_state.
The certified height is known from waiting_for_certified_state on and grows by one per block
interval while healthy. State is computed lazily from the clock on every `update`, so callers
(requests, a ticker) see exact values without a timer of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from harness.node.status import ReplicaHealthStatus

log = logging.getLogger(__name__)

TransitionHook = Callable[[ReplicaHealthStatus, ReplicaHealthStatus], None]


class Health:
    """Health state of one replica; `on_transition(before, after)` is called on each change."""

    def __init__(
        self,
        started_at: float,
        warmup_seconds: float,
        block_interval: float,
        on_transition: TransitionHook,
    ) -> None:
        if block_interval <= 0:
            raise ValueError(f"block interval must be > 0, got {block_interval}")
        self._started_at = started_at
        self._warmup = warmup_seconds
        self._block_interval = block_interval
        self._on_transition = on_transition
        self._state = ReplicaHealthStatus.STARTING
        self._height: int | None = None
        self._height_anchor = 0.0

    @property
    def state(self) -> ReplicaHealthStatus:
        return self._state

    @property
    def certified_height(self) -> int | None:
        """None while starting: the replica does not know its certified state yet."""
        return self._height

    def update(self, now: float, unhealthy: bool) -> None:
        """Advance to the state and height that hold at `now`."""
        self._set_state(self._target(now, unhealthy), now)
        if self._state == ReplicaHealthStatus.HEALTHY:
            # The epsilon keeps 0.5 / 0.1 from counting 4 blocks in binary floating point.
            blocks = int((now - self._height_anchor) / self._block_interval + 1e-9)
            if blocks > 0:
                assert self._height is not None
                self._height += blocks
                self._height_anchor += blocks * self._block_interval

    def _target(self, now: float, unhealthy: bool) -> ReplicaHealthStatus:
        elapsed = now - self._started_at
        if elapsed < self._warmup / 2:
            return ReplicaHealthStatus.STARTING
        if elapsed < self._warmup or unhealthy:
            return ReplicaHealthStatus.WAITING_FOR_CERTIFIED_STATE
        return ReplicaHealthStatus.HEALTHY

    def _set_state(self, new: ReplicaHealthStatus, now: float) -> None:
        before = self._state
        if new == before:
            return
        if new == ReplicaHealthStatus.STARTING:
            # Time only moves forward, so nothing ever goes back to starting.
            raise AssertionError(f"illegal health transition {before} -> {new}")
        if before == ReplicaHealthStatus.STARTING and new == ReplicaHealthStatus.HEALTHY:
            # An update that comes late still walks the lifecycle in order, as the IC does.
            self._set_state(ReplicaHealthStatus.WAITING_FOR_CERTIFIED_STATE, now)
            before = self._state
        if self._height is None:
            # STARTING -> WAITING_FOR_CERTIFIED_STATE (or straight to HEALTHY): height known.
            self._height = 0
        if new == ReplicaHealthStatus.HEALTHY:
            self._height_anchor = now
        self._state = new
        log.info("health: %s -> %s", before, new)
        self._on_transition(before, new)
