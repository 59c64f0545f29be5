"""Replica stub: the IC replica's public API surface, health lifecycle, metrics and faults.

Run as ``replica`` or ``python -m harness.node.replica``. Flags: ``--http-listen``
(0.0.0.0:8080), ``--metrics-listen`` (0.0.0.0:9090), ``--replica-version`` (0.0.0),
``--node-id``, ``--subnet-id``, ``--root-key-file`` (133-byte DER; default: a fixed key that
every replica without a file shares), ``--warmup-seconds`` (0.2), ``--block-interval`` (0.1),
``--faults-file``, ``--graceful-timeout`` (5), ``--log-level`` (info). Bad flags or a bad root
key file exit 2; a listen address that cannot be bound exits 1; SIGTERM drains and exits 0.

Public API (``--http-listen``): ``GET|HEAD /api/v2/status`` (CBOR status record), and the
canister/subnet endpoints ``/api/v{2,3}/canister/<id>/{query,call,read_state}``,
``/api/v2/subnet/<id>/read_state``, ``/api/v3/subnet/<id>/{read_state,query}``,
``/api/v4/{canister,subnet}/<id>/call`` (POST, CBOR), which answer the IC's reject for a
canister or subnet this replica does not host (see `rejects`).

Health: ``starting`` → ``waiting_for_certified_state`` after half the warm-up → ``healthy``
after the warm-up; the certified height is reported from waiting_for_certified_state on and
grows by one per block interval while healthy.

Fault knobs
-----------
Off by default and not reachable from the API port: ``--faults-file`` names a JSON object,
re-read when the file changes (checked at most every 100 ms; a missing file means no faults,
so deleting it clears them; write it atomically, by rename). Keys:

``"fail_at_start": <int 0-255>``
    Checked once at start: log the reason and exit with that code before binding.
``"unhealthy": true``
    Stay in, or go back to, ``waiting_for_certified_state``; the certified height stops.
``"delay_seconds": <number >= 0>``
    Every API response (status included) is sent that much later.
``"critical_errors": <int >= 0>``
    Raise the ``critical_errors_total`` counter to at least that value.

A file with an unknown key, a wrong type or invalid JSON is logged as an error and ignored;
the knobs in force stay as they were.
"""
