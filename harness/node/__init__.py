"""Programs that run inside a node (orchestrator, replica, ic-gateway, ic-boundary).

Nothing here imports `harness.driver`: a node must run without the driver installed.
"""
