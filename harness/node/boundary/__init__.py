"""ic-boundary: the API boundary node, routing IC API requests to healthy replicas.

The orchestrator runs it on API boundary nodes as the IC does (``--tls-hostname <node domain>
--crypto-config <json>`` plus the env file). Differences from the IC's program:

- Plain HTTP only, on ``--listen-http-addr`` (default ``[::]:443``): testnets have no TLS, so
  ``--crypto-config`` is accepted and ignored, as are ``LISTEN_HTTPS_PORT``/``TLS_CERT_PATH``.
- Replicas come from the registry store (``--registry-local-store-path``): every subnet's
  members, at ``http://<node.ip>:<node.http_port>``; or from a static ``--upstreams`` list.
- Our registry has no canister ranges, so a canister's subnet is chosen by rendezvous hashing
  of the canister id over the subnet ids (`routing.subnet_for_canister`).

Modules: `config` (flags and env), `routing` (routes, canister → subnet, round-robin),
`health` (status probes), `discovery` (registry polling), `upstream` (forwarding), `app`
(the handler of `harness.node.http_server`), `metrics` (Prometheus, on
``--obs-metrics-addr``, default ``[::]:9324``).
"""
