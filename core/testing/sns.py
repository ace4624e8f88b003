"""A fake Amazon SNS on loopback, for the bounce endpoint's tests: it signs envelopes with a key
and certificate generated here, serves that certificate, and answers subscription confirmations.

Follows Amazon's public documentation:
- Envelopes (Type, MessageId, TopicArn, Subject, Message, Timestamp, SignatureVersion, Signature,
  SigningCertURL, UnsubscribeURL; Token and SubscribeURL in confirmations):
  https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html
- The string to sign and the algorithms (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA):
  https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html
- SubscribeURL: a GET of ?Action=ConfirmSubscription&TopicArn=...&Token=... answered with a
  ConfirmSubscriptionResponse XML document:
  https://docs.aws.amazon.com/sns/latest/api/API_ConfirmSubscription.html

Real certificates live at https://sns.<region>.amazonaws.com/SimpleNotificationService-<hash>.pem;
this one serves http://127.0.0.1:<port>/SimpleNotificationService-<hash>.pem, which the tests
allow through campaigns.sns's SNS_TEST_URL_PREFIX setting (production accepts only the SNS hosts).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-bounces"
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def make_certificate(common_name: str = "sns.amazonaws.com") -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh RSA key and a self-signed certificate for it (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


def string_to_sign(envelope: dict[str, Any]) -> bytes:
    fields = _SIGNED[envelope["Type"]]
    return "".join(f"{name}\n{envelope[name]}\n" for name in fields if name in envelope).encode()


class FakeSns:
    """with FakeSns() as sns: sns.notification({...}), sns.subscription_confirmation(),
    sns.url_prefix, sns.cert_fetches, sns.confirmed (the tokens confirmed)."""

    def __init__(self) -> None:
        self.key, self.cert_pem = make_certificate()
        self.cert_fetches = 0
        self.confirmed: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url_prefix = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.cert_url = f"{self.url_prefix}SimpleNotificationService-{uuid.uuid4().hex}.pem"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  http.server's naming
                parts = urlsplit(self.path)
                if parts.path.endswith(".pem") and fake.cert_url.endswith(parts.path):
                    with fake.lock:
                        fake.cert_fetches += 1
                    self._answer(200, fake.cert_pem, "application/x-x509-ca-cert")
                    return
                query = parse_qs(parts.query)
                if query.get("Action") == ["ConfirmSubscription"] and query.get("Token"):
                    with fake.lock:
                        fake.confirmed.append(query["Token"][0])
                    arn = f"{query.get('TopicArn', [TOPIC])[0]}:{uuid.uuid4()}"
                    body = ('<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                            f"<ConfirmSubscriptionResult><SubscriptionArn>{arn}</SubscriptionArn>"
                            "</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>")
                    self._answer(200, body.encode(), "text/xml")
                    return
                self._answer(404, b"not found", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> FakeSns:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeSns:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- Envelopes ----------------------------------------------------------------------------

    def sign(self, envelope: dict[str, Any], *, version: str = "1") -> dict[str, Any]:
        signed = {**envelope, "SignatureVersion": version, "SigningCertURL": envelope.get("SigningCertURL",
                                                                                           self.cert_url)}
        signature = self.key.sign(string_to_sign(signed), padding.PKCS1v15(), _HASHES[version]())
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def _base(self, kind: str, message: str, topic: str) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {"Type": kind, "MessageId": str(uuid.uuid4()), "TopicArn": topic, "Message": message,
                "Timestamp": now}

    def notification(self, message: dict[str, Any] | str, *, topic: str = TOPIC, version: str = "1",
                     subject: str | None = None) -> dict[str, Any]:
        body = message if isinstance(message, str) else json.dumps(message)
        envelope = self._base("Notification", body, topic)
        if subject is not None:
            envelope["Subject"] = subject
        envelope["UnsubscribeURL"] = f"{self.url_prefix}?Action=Unsubscribe&SubscriptionArn={topic}:x"
        return self.sign(envelope, version=version)

    def confirmation(self, kind: str = "SubscriptionConfirmation", *, topic: str = TOPIC,
                     version: str = "1", subscribe_url: str | None = None) -> dict[str, Any]:
        token = uuid.uuid4().hex * 2
        query = urlencode({"Action": "ConfirmSubscription", "TopicArn": topic, "Token": token})
        url = subscribe_url or f"{self.url_prefix}?{query}"
        text = (f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the "
                "SubscribeURL included in this message.")
        envelope = {**self._base(kind, text, topic), "Token": token, "SubscribeURL": url}
        return self.sign(envelope, version=version)


@contextmanager
def fake_sns_for(settings: Any) -> Iterator[FakeSns]:
    """A running FakeSns the bounce endpoint trusts: its URLs allowed (SNS_TEST_URL_PREFIX, a
    setting only code sets) and its topic on SNS_TOPIC_ARNS. `settings`: pytest-django's fixture.
    Its certificate URL is new each time, so no cached certificate carries over between tests."""
    with FakeSns() as fake:
        settings.SNS_TEST_URL_PREFIX = fake.url_prefix
        settings.SNS_TOPIC_ARNS = [TOPIC]
        yield fake
