"""The node programs' TLS contexts (`harness.node.tls`): a verifying one only for https, one
per process of each kind."""

from __future__ import annotations

import ssl

from harness.node.tls import verify_for


def test_https_gets_the_process_verifying_context() -> None:
    context = verify_for(["http://127.0.0.1:8080", "HTTPS://registry.test"])
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert verify_for(["https://other.test"]) is context  # built once per process


def test_plain_http_gets_the_shared_context_that_verifies_nothing() -> None:
    context = verify_for(["http://127.0.0.1:8080"])
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname
    assert verify_for(()) is context
    assert verify_for(["https://x.test"]) is not context
