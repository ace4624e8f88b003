"""The one signing scheme of outgoing webhooks (and the CRM's inbound endpoint)."""

from __future__ import annotations

import hashlib
import hmac

from django.test import override_settings

from core.webhooks import MAX_SKEW, outgoing_secret, sign, signed_headers, verify

BODY = b'{"event": "workflow.webhook", "contact": {"email": "ann@example.com"}}'


def test_the_signature_is_an_hmac_sha256_of_timestamp_dot_body_that_a_receiver_can_recompute() -> None:
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", BODY) == f"sha256={expected}"


def test_a_receiver_accepts_only_the_same_secret_the_same_bytes_and_a_fresh_timestamp() -> None:
    headers = signed_headers(BODY, secret="s3cret", now=1_700_000_000)
    timestamp, signature = headers["X-Leadflow-Timestamp"], headers["X-Leadflow-Signature"]
    assert headers["Content-Type"] == "application/json"
    assert verify("s3cret", timestamp, signature, BODY, now=1_700_000_010)
    assert not verify("s3cret", timestamp, signature, BODY.replace(b"ann", b"eve"), now=1_700_000_010)
    assert not verify("other", timestamp, signature, BODY, now=1_700_000_010)
    assert not verify("s3cret", timestamp, signature, BODY, now=1_700_000_000 + MAX_SKEW + 1)  # replayed later
    assert not verify("s3cret", "not-a-time", signature, BODY, now=1_700_000_010)
    assert not verify("", timestamp, signature, BODY, now=1_700_000_010)
    assert not verify("s3cret", "²", signature, BODY, now=1_700_000_010)  # a digit to isdigit(), not to int()
    assert not verify("s3cret", timestamp, "sha256=é", BODY, now=1_700_000_010)  # refused, not a TypeError


def test_the_outgoing_secret_is_the_setting_when_set_else_derived_from_the_secret_key() -> None:
    with override_settings(WEBHOOK_SIGNING_SECRET="configured", ALERT_WEBHOOK_SECRET="pager"):
        assert outgoing_secret() == "configured"
        assert outgoing_secret("alerts") == "pager"
    with override_settings(WEBHOOK_SIGNING_SECRET="", ALERT_WEBHOOK_SECRET=""):
        assert outgoing_secret("workflows") != outgoing_secret("alerts")  # one per kind of receiver
    with override_settings(WEBHOOK_SIGNING_SECRET="", SECRET_KEY="key-one" * 8):
        derived = outgoing_secret()
    with override_settings(WEBHOOK_SIGNING_SECRET="", SECRET_KEY="key-two" * 8):
        assert outgoing_secret() != derived  # not a constant: each installation has its own
    assert len(derived) == 64
