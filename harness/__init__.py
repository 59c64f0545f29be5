"""System-test harness and testnet driver for Internet-Computer-style multi-process nodes.

Layers, imported only downward: `harness.node` (programs that run inside a node) ->
`harness.driver` (topology, registry writes, backends, test environment, metric checks) ->
`harness.pytest_plugin` (a thin pytest adapter).
"""
