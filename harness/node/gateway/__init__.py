"""ic-gateway: the HTTP side-car in front of a replica on cloud-engine nodes, after
dfinity/ic-gateway, serving the IC API on plain HTTP (`LISTEN_PLAIN`, port 80 on a node).

It serves HTTP/1.1 at the protocol level (`harness.node.http_server`, httptools and uvloop) and
forwards over kept-alive connections it parses itself (`harness.node.upstream_pool`): one HTTP
stack, no ASGI server and no client library on the hot path. A request goes through
`proxy.Gateway`: forward-proxy requests are refused, the Host must be
one of `DOMAIN`, the path one of `routes`, the body at most `IC_REQUEST_MAX_SIZE`; then
`forward.Forwarder` sends it to a replica of `IC_URL` (retrying what `harness.node.retry` says:
connect errors, hang-ups before any answer, 429 and 5xx; one deadline, `IC_RESPONSE_TIMEOUT`)
through `upstream.PooledUpstream`, with headers rewritten by `headers`. `GET /health` is 204
while a replica's `/api/v2/status` says healthy (`health.HealthCheck`), 503 otherwise. What each
failure answers is decided in `errors`; metrics (`metrics`) are served on `METRICS_LISTEN`;
settings are read by `config`.
Run it as `ic-gateway` or `python -m harness.node.gateway`.
"""
