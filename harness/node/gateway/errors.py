"""Every way a request can fail in ic-gateway, each with its status code and metric label.

This is the one place that decides what the client gets; the proxy turns any `GatewayError`
into a ``text/plain`` answer with `status`, the message as body and `headers` added::

    GatewayError                 500 general_error       (a bug; logged with traceback)
    ├── ClientError              400 malformed_request   (the request is at fault)
    │   ├── NoAuthority          400 no_authority        "Missing Authority"
    │   ├── UnknownDomain        400 unknown_domain      "Unknown Domain: <host>"
    │   ├── NotAProxy            400/405 not_a_proxy     absolute-form target, CONNECT
    │   ├── NotFound             404 not_found
    │   ├── MethodNotAllowed     405 method_not_allowed  (with Allow)
    │   └── PayloadTooLarge      413 payload_too_large
    └── UpstreamError            502 backend_error_other (the replica is at fault)
        ├── UpstreamUnreachable  502 backend_error_connect   no connection, or closed unanswered
        ├── UpstreamTimeout      504 backend_timeout
        └── UpstreamUnhealthy    503 backend_unhealthy       (/health only)

The labels follow the real gateway's `ErrorCause` names where it has one. Whether a failed
attempt is tried again is not the class's call but its `failure`'s (`harness.node.retry`).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.node.retry import Failure

Headers = Sequence[tuple[bytes, bytes]]


class GatewayError(Exception):
    """A request that gets an answer of the gateway's own instead of the replica's."""

    status = 500
    label = "general_error"

    def __init__(self, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class ClientError(GatewayError):
    status = 400
    label = "malformed_request"


class NoAuthority(ClientError):
    label = "no_authority"

    def __init__(self) -> None:
        super().__init__("Missing Authority")


class UnknownDomain(ClientError):
    label = "unknown_domain"

    def __init__(self, host: str) -> None:
        super().__init__(f"Unknown Domain: {host}")


class NotAProxy(ClientError):
    """A request that asks the gateway to be a forward proxy; the connection is closed after."""

    label = "not_a_proxy"

    def __init__(self, method: str, target: str) -> None:
        if method == "CONNECT":
            self.status = 405
            message = f"CONNECT {target} is not supported: ic-gateway is not a forward proxy"
        else:
            message = (
                f"absolute-form request target {target!r} is not supported: ic-gateway is "
                "not a forward proxy; send the path only (origin-form) with a Host header"
            )
        super().__init__(message, ((b"connection", b"close"),))


class NotFound(ClientError):
    status = 404
    label = "not_found"

    def __init__(self, path: str) -> None:
        super().__init__(f"Not Found: no route for {path}")


class MethodNotAllowed(ClientError):
    status = 405
    label = "method_not_allowed"

    def __init__(self, method: str, path: str, allow: bytes) -> None:
        super().__init__(
            f"Method Not Allowed: {method} {path}; allowed: {allow.decode()}",
            ((b"allow", allow),),
        )


class PayloadTooLarge(ClientError):
    status = 413
    label = "payload_too_large"

    def __init__(self, limit: int, seen: int) -> None:
        # The rest of the body is not read, so the connection cannot carry another request.
        super().__init__(
            f"Payload Too Large: the request body has {seen} bytes or more, "
            f"the maximum is {limit} bytes (--ic-request-max-size)",
            ((b"connection", b"close"),),
        )


class UpstreamError(GatewayError):
    """The replica at `upstream` (its base URL) did not give a usable answer; `failure` says
    why, and so whether the request may be sent again (`harness.node.retry`)."""

    status = 502
    label = "backend_error_other"

    def __init__(self, upstream: str, message: str, failure: Failure = Failure.OTHER) -> None:
        super().__init__(f"upstream {upstream} {message}")
        self.upstream = upstream
        self.failure = failure


class UpstreamUnreachable(UpstreamError):
    label = "backend_error_connect"

    def __init__(
        self, upstream: str, detail: str, failure: Failure = Failure.NOT_CONNECTED
    ) -> None:
        super().__init__(upstream, f"unreachable: {detail}", failure)


class UpstreamTimeout(UpstreamError):
    status = 504
    label = "backend_timeout"

    def __init__(self, upstream: str, seconds: float) -> None:
        super().__init__(
            upstream,
            f"did not answer within {seconds:g}s (--ic-response-timeout)",
            Failure.TIMED_OUT,
        )


class UpstreamUnhealthy(UpstreamError):
    status = 503
    label = "backend_unhealthy"

    def __init__(self, upstream: str, reason: str) -> None:
        super().__init__(upstream, f"is not healthy: {reason}")
