"""Amazon SNS messages posted to the bounce endpoint: signature check, topic allow-list,
subscription confirmation.

Follows Amazon's public documentation:
- Envelope fields and message types (Notification, SubscriptionConfirmation,
  UnsubscribeConfirmation): https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html
- Verifying signatures: https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
  and .../sns-verify-signature-of-message-verify-message-signature.html. The string to sign is
  "Name\\nValue\\n" for each field, in this order: a Notification signs Message, MessageId,
  Subject (only if present), Timestamp, TopicArn, Type; a SubscriptionConfirmation or
  UnsubscribeConfirmation signs Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type.
  SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA (PKCS #1 v1.5), Signature is base64.
- The certificate is fetched over HTTPS from SigningCertURL, accepted only from an SNS endpoint
  (https://sns.<region>.amazonaws.com[.cn]/...pem, the host pattern the AWS SDKs' message
  validators use), and "Reject any message with an unexpected TopicArn".
- Confirming: "visit the SubscribeURL" (https://docs.aws.amazon.com/sns/latest/dg/
  http-subscription-confirmation-json.html); it is fetched only from the same SNS host pattern.

- Freshness and duplicates. Amazon's verification pages name no Timestamp check, but SNS stops
  retrying an HTTP/S delivery within 3,600 s ("The total policy retry time for an HTTP/S endpoint
  cannot be greater than 3,600 seconds. This is a hard limit", https://docs.aws.amazon.com/sns/latest/
  dg/sns-message-delivery-retries.html), and Timestamp ("the time (GMT) when the notification was
  published", sns-message-and-json-formats.html) is signed. So a message older than
  SNS_MAX_AGE_SECONDS (default 3600) or dated more than CLOCK_SKEW_SECONDS ahead is refused: a
  captured message cannot be replayed later. Within the window SNS may deliver a message more than
  once ("your endpoint should have code that can handle retried messages", SendMessageToHttp.retry.html),
  repeating its MessageId: sns_notification_claim records each MessageId once (unique), so a retry
  is acknowledged and not processed again.

The certificate's own chain is not walked: it comes over verified TLS from an amazonaws.com SNS
host, which is what vouches for it (as in the SDK validators). Fetched certificates are kept in
memory per URL (SNS rotates them rarely; a new URL is fetched once).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core import outbound

log = logging.getLogger(__name__)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
TYPES = (NOTIFICATION, SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION)

_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    UNSUBSCRIBE_CONFIRMATION: ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_OPTIONAL = {"Subject"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# sns.us-east-1.amazonaws.com, sns.cn-north-1.amazonaws.com.cn: SNS's own endpoints, nothing else.
SNS_HOST = re.compile(r"sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?")
# Only code can set this (tests point it at their loopback certificate server); never the environment.
TEST_URL_PREFIX_SETTING = "SNS_TEST_URL_PREFIX"

CERT_CACHE_SIZE = 16
CERT_MAX_BYTES = 64 * 1024
HTTP_TIMEOUT = 10.0
CLOCK_SKEW_SECONDS = 300  # SNS's clock and ours: a Timestamp this far ahead is still accepted
MESSAGE_ID_MAX = 100  # SNS MessageIds are UUIDs (36 characters); SnsNotification.message_id's length


class SnsRejected(Exception):  # noqa: N818  a refusal with the reason, not a crash
    """The message is not a genuine SNS message for an allowed topic; the text says why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --- Where certificates and confirmations may come from -------------------------------------------


def sns_url_problem(url: str, *, what: str, suffix: str = "") -> str | None:
    """Why `url` is not an SNS endpoint URL (https, an sns.<region>.amazonaws.com host, no
    credentials or port), or None. `suffix`: what the path must end with (".pem")."""
    prefix = getattr(settings, TEST_URL_PREFIX_SETTING, "")
    if prefix and url.startswith(prefix) and url.endswith(suffix):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{what} is not a valid URL"
    if parts.scheme != "https" or port not in (None, 443) or parts.username or parts.password:
        return f"{what} must be an https URL of Amazon SNS"
    if not SNS_HOST.fullmatch(parts.hostname or ""):
        return f"{what} host {str(parts.hostname)[:100]!r} is not an Amazon SNS endpoint (sns.<region>.amazonaws.com)"
    if suffix and not parts.path.endswith(suffix):
        return f"{what} must end with {suffix}"
    return None


# --- Certificates ---------------------------------------------------------------------------------

_certs: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
_certs_lock = threading.Lock()


def _public_key(url: str) -> rsa.RSAPublicKey:
    with _certs_lock:
        if url in _certs:
            _certs.move_to_end(url)
            return _certs[url]
    key = _fetch_public_key(url)
    with _certs_lock:
        _certs[url] = key
        while len(_certs) > CERT_CACHE_SIZE:
            _certs.popitem(last=False)
    return key


def _fetch_public_key(url: str) -> rsa.RSAPublicKey:
    unavailable = SnsRejected(503, "sns_certificate_unavailable",
                              "the SNS signing certificate could not be fetched; SNS will retry")
    try:
        with outbound.session() as http:
            response = http.get(url, timeout=HTTP_TIMEOUT, stream=True)
            body = response.raw.read(CERT_MAX_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        log.warning("SNS: fetching the signing certificate %s failed: %s", url[:200], exc)
        raise unavailable from None
    if response.status_code != 200 or len(body) > CERT_MAX_BYTES:
        log.warning("SNS: signing certificate %s: %s", url[:200], outbound.status_text(response))
        raise unavailable
    try:
        key = x509.load_pem_x509_certificate(body).public_key()
    except ValueError:
        raise SnsRejected(403, "invalid_signature", "SigningCertURL does not hold a PEM certificate") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRejected(403, "invalid_signature", "the SNS signing certificate is not an RSA certificate")
    return key


def cert_cache_clear() -> None:
    with _certs_lock:
        _certs.clear()


# --- Verification ---------------------------------------------------------------------------------


def string_to_sign(envelope: dict[str, Any]) -> bytes:
    kind = envelope["Type"]
    lines = []
    for name in _SIGNED_FIELDS[kind]:
        if name in _OPTIONAL and name not in envelope:
            continue
        lines.append(f"{name}\n{envelope[name]}\n")
    return "".join(lines).encode("utf-8")


def _check_shape(envelope: dict[str, Any]) -> str:
    kind = envelope.get("Type")
    if kind not in TYPES:
        shown = repr(kind)[:60] if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise SnsRejected(400, "invalid_body", f"unsupported SNS Type {shown} ({', '.join(TYPES)})")
    for name in (*_SIGNED_FIELDS[kind], "SignatureVersion", "Signature", "SigningCertURL"):
        if name in _OPTIONAL and name not in envelope:
            continue
        if not isinstance(envelope.get(name), str):
            raise SnsRejected(400, "invalid_body", f"SNS {name}: required in a {kind}, a string")
    if len(envelope["MessageId"]) > MESSAGE_ID_MAX:
        raise SnsRejected(400, "invalid_body", f"SNS MessageId: longer than {MESSAGE_ID_MAX} characters")
    return str(kind)


def _timestamp(envelope: dict[str, Any]) -> dt.datetime:
    """The envelope's Timestamp (ISO 8601 in UTC, "2012-04-25T21:49:25.719Z"), aware."""
    try:
        stamp = dt.datetime.fromisoformat(envelope["Timestamp"])
    except ValueError:
        stamp = None
    if stamp is None or stamp.tzinfo is None:
        raise SnsRejected(400, "invalid_body",
                          f"SNS Timestamp {envelope['Timestamp'][:40]!r} is not an ISO 8601 time with a zone")
    return stamp


def _check_fresh(envelope: dict[str, Any]) -> None:
    """Refuse a message published longer than SNS_MAX_AGE_SECONDS ago, or dated in the future."""
    age = (timezone.now() - _timestamp(envelope)).total_seconds()
    max_age = settings.SNS_MAX_AGE_SECONDS
    if age > max_age:
        raise SnsRejected(403, "sns_message_too_old",
                          f"SNS Timestamp {envelope['Timestamp'][:40]} is {int(age)} s old, more than "
                          f"SNS_MAX_AGE_SECONDS ({max_age}): a replayed message is refused")
    if age < -CLOCK_SKEW_SECONDS:
        raise SnsRejected(403, "sns_message_from_future",
                          f"SNS Timestamp {envelope['Timestamp'][:40]} is {int(-age)} s in the future "
                          f"(more than {CLOCK_SKEW_SECONDS} s of clock skew)")


def sns_verify(envelope: dict[str, Any]) -> str:
    """Check an SNS envelope: shape, topic allow-list (SNS_TOPIC_ARNS), signing certificate URL,
    signature, Timestamp within SNS_MAX_AGE_SECONDS. Returns its Type; raises SnsRejected naming the problem."""
    kind = _check_shape(envelope)
    topic = envelope["TopicArn"]
    allowed = list(getattr(settings, "SNS_TOPIC_ARNS", []) or [])
    if topic not in allowed:
        raise SnsRejected(403, "topic_not_allowed",
                          f"SNS topic {topic[:200]!r} is not in SNS_TOPIC_ARNS"
                          + ("" if allowed else " (empty: no SNS topic is accepted)"))
    version = envelope["SignatureVersion"]
    if version not in _HASHES:
        raise SnsRejected(403, "invalid_signature", f"unsupported SNS SignatureVersion {version[:10]!r} (1 or 2)")
    problem = sns_url_problem(envelope["SigningCertURL"], what="SigningCertURL", suffix=".pem")
    if problem:
        raise SnsRejected(403, "invalid_signature", problem)
    try:
        signature = base64.b64decode(envelope["Signature"], validate=True)
    except (ValueError, binascii.Error):
        raise SnsRejected(403, "invalid_signature", "SNS Signature is not base64") from None
    key = _public_key(envelope["SigningCertURL"])
    try:
        key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), _HASHES[version]())
    except InvalidSignature:
        raise SnsRejected(403, "invalid_signature", "the SNS signature does not match the message") from None
    _check_fresh(envelope)  # after the signature: a Timestamp changed in transit is a bad signature
    return kind


def sns_notification_claim(envelope: dict[str, Any]) -> bool:
    """Record a verified Notification's MessageId; False when it was recorded before (an SNS retry:
    acknowledge it, process nothing). Call it inside the transaction that processes the message,
    so a failure rolls the claim back with the work and SNS's retry is processed then."""
    from campaigns.models import SnsNotification

    SnsNotification.objects.filter(timestamp__lt=timezone.now() - dt.timedelta(
        seconds=settings.SNS_MAX_AGE_SECONDS + CLOCK_SKEW_SECONDS)).delete()  # refused by _check_fresh anyway
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction goes on after a duplicate
            SnsNotification.objects.create(message_id=envelope["MessageId"], timestamp=_timestamp(envelope))
    except IntegrityError:
        return False
    return True


def subscription_confirm(envelope: dict[str, Any]) -> None:
    """Visit SubscribeURL (a verified SubscriptionConfirmation's), through core.outbound."""
    url = envelope["SubscribeURL"]
    problem = sns_url_problem(url, what="SubscribeURL")
    if problem:
        raise SnsRejected(400, "invalid_body", problem)
    try:
        with outbound.session() as http:
            response = http.get(url, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        log.warning("SNS: confirming the subscription to %s failed: %s", envelope["TopicArn"], exc)
        raise SnsRejected(503, "sns_confirmation_failed",
                          "the subscription could not be confirmed now (logged); request confirmation again "
                          "in the SNS console") from None
    if response.status_code != 200:
        log.warning("SNS: confirming the subscription to %s: %s", envelope["TopicArn"], outbound.status_text(response))
        raise SnsRejected(503, "sns_confirmation_failed",
                          f"confirming the subscription answered {outbound.status_text(response)}")
    log.info("SNS: subscription to %s confirmed", envelope["TopicArn"])
