"""A lean MIME writer for the delivery hot path: multipart/alternative, UTF-8, quoted-printable.

Why: building each email with Django's EmailMessage (the stdlib's compat32 header folding and
generator) costs about as much CPU as the SMTP exchange itself. Our emails have one shape, so
they are written directly: headers are plain ASCII or RFC 2047-encoded, bodies are quoted-printable
(binascii, in C), lines end in CRLF and stay under the 998-octet limit. Anything outside that
shape (a non-ASCII address) returns None and the caller uses Django's builder instead.
Tests parse the output back with the stdlib parser (campaigns/tests/test_mime.py).
"""

from __future__ import annotations

import binascii
import secrets
from email.header import Header
from email.utils import formataddr, formatdate


def _ascii(value: str) -> bool:
    return value.isascii()


def _header(name: str, value: str) -> str:
    value = " ".join(value.split())  # no CR/LF can reach the wire: no header injection
    if _ascii(value) and len(name) + len(value) < 900:
        return f"{name}: {value}"
    return f"{name}: {Header(value, 'utf-8', header_name=name).encode(linesep=chr(13) + chr(10))}"


def _qp(text: str) -> bytes:
    # Normalise newlines first; b2a_qp then keeps lines under 76 octets with soft breaks.
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n")


def build(*, subject: str, from_name: str, from_email: str, to: str, reply_to: str, text: str, html: str,
          headers: dict[str, str]) -> bytes | None:
    """The full message as bytes, or None when an address needs more than this writer does."""
    if not (_ascii(from_email) and _ascii(to) and _ascii(reply_to)):
        return None
    boundary = f"=_lf{secrets.token_hex(12)}"
    lines = [
        _header("From", formataddr((from_name, from_email), charset="utf-8") if from_name else from_email),
        _header("To", to),
        _header("Subject", subject),
        f"Date: {formatdate(usegmt=True)}",
        "MIME-Version: 1.0",
    ]
    if reply_to:
        lines.append(_header("Reply-To", reply_to))
    lines.extend(_header(name, value) for name, value in headers.items())
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    part = "Content-Type: text/{}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    return b"".join([
        head,
        f"--{boundary}\r\n".encode(), part.format("plain").encode(), _qp(text), b"\r\n",
        f"--{boundary}\r\n".encode(), part.format("html").encode(), _qp(html), b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ])
