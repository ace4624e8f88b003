"""Signed webhooks: one scheme for every POST Leadflow makes (workflow `webhook` and `notify_sales`
steps, alert notifications, the CRM webhook connector) and checks (the CRM status endpoint).

Headers: X-Leadflow-Timestamp (unix seconds) and X-Leadflow-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<raw body>"> under a shared secret. A receiver recomputes it over the bytes it got and
rejects a timestamp more than 5 minutes off, so a captured request cannot be replayed later or
altered (docs/workflows.md shows a check in a few lines).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from django.conf import settings
from django.utils.crypto import salted_hmac

SIGNATURE_HEADER = "X-Leadflow-Signature"
TIMESTAMP_HEADER = "X-Leadflow-Timestamp"
MAX_SKEW = 300  # seconds between the sender's timestamp and the receiver's clock


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, signature: str, body: bytes, *, now: float | None = None) -> bool:
    """True when `signature` signs `body` at `timestamp` under `secret`, and the timestamp is fresh.
    Any malformed header is simply False (ASCII digits only: "²".isdigit() is true, int() refuses it)."""
    if not secret or not (timestamp.isascii() and timestamp.isdigit()) or not signature.isascii():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode("ascii"), signature.encode("ascii"))


# One secret per kind of receiver: whoever checks workflow webhooks (any URL a marketer enters)
# must not be able to sign what the on-call pager trusts.
PURPOSES = {"workflows": "WEBHOOK_SIGNING_SECRET", "alerts": "ALERT_WEBHOOK_SECRET"}


def outgoing_secret(purpose: str = "workflows") -> str:
    """The purpose's setting (WEBHOOK_SIGNING_SECRET, ALERT_WEBHOOK_SECRET), else one derived from
    SECRET_KEY and the purpose (set them, so rotating SECRET_KEY does not change what receivers check)."""
    configured = str(getattr(settings, PURPOSES[purpose], "") or "")
    return configured or salted_hmac("leadflow.webhooks", purpose, algorithm="sha256").hexdigest()


def signed_headers(body: bytes, *, purpose: str = "workflows", secret: str | None = None,
                   now: float | None = None) -> dict[str, str]:
    """Content-Type, timestamp and signature headers for POSTing exactly `body`."""
    timestamp = str(int(time.time() if now is None else now))
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(outgoing_secret(purpose) if secret is None else secret, timestamp, body)}
