"""Which failed upstream attempts ic-gateway and ic-boundary send again: the one rule of both.

An attempt is tried again (on the next upstream, as each program's retry policy says) when

- it could not be sent: no connection was made (refused, unreachable, TLS handshake failed,
  connect timeout) (`Failure.NOT_CONNECTED`);
- it was not answered at all: the connection closed before the first byte of an answer, as a
  kept-alive connection does that the replica shut while the request was on its way
  (`Failure.UNANSWERED`; RFC 9112 §9.3.1 lets a client resend then);
- the replica answered 429 or 5xx (`retryable_status`): it is overloaded, not healthy or has
  no certified state yet, and another replica, or a later try, may answer. Both real programs
  do this (ic-gateway's `status_code_needs_retrying`, ic-boundary's `request_needs_retrying`).

It is not tried again when the replica may have acted on it and its answer is lost: an answer
that had begun and broke off or was no HTTP (`Failure.BROKEN_ANSWER`), a connection reset after
connecting (`Failure.CONNECTION_LOST`), no answer in time (`Failure.TIMED_OUT`: the replica may
still be working on it, and the time is spent), anything else (`Failure.OTHER`); nor when the
replica gave another answer (1xx-4xx but 429): that answer is its verdict and is passed on.

Every IC API request kind may be sent again, a ``call`` too: a request is a signed envelope
whose message id is the hash of its content, and a replica accepts a message id at most once
(ingress expiry and ingress history), so a resent call is never executed twice; status, query
and read_state only read. And every request can be sent again byte for byte: both programs read
the whole body (within their size limit) before the first attempt and send that copy each time.
So the request does not enter the rule; how many attempts a program makes, where, and with which
pauses stays its own (``--ic-request-retries``; ic-boundary's healthy replicas of the pool).
"""

from __future__ import annotations

import enum


class Failure(enum.Enum):
    """Why an attempt got no answer, as far as sending it again goes."""

    NOT_CONNECTED = "not_connected"
    UNANSWERED = "unanswered"
    BROKEN_ANSWER = "broken_answer"
    CONNECTION_LOST = "connection_lost"
    TIMED_OUT = "timed_out"
    OTHER = "other"

    @property
    def retryable(self) -> bool:
        """Whether the request is known not to have been acted on, so it may be sent again."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({Failure.NOT_CONNECTED, Failure.UNANSWERED})


def retryable_status(status: int) -> bool:
    """Whether an answer with `status` is worth asking another replica, or again: 429 or 5xx."""
    return status == 429 or status >= 500
