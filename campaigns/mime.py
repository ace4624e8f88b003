"""A lean MIME writer for the delivery hot path: multipart/alternative, UTF-8, quoted-printable.

Why: building each email with Django's EmailMessage (the stdlib's compat32 header folding and
generator) costs about as much CPU as the SMTP exchange itself. Our emails have one shape, so
they are written directly: headers are plain ASCII or RFC 2047-encoded, bodies are quoted-printable
(binascii, in C), lines end in CRLF and stay under the 998-octet limit. Anything outside that
shape (a non-ASCII local part, which needs SMTPUTF8) returns None and the caller uses Django's
builder instead.

Headers (RFC 5322 section 2.2.3 folding, RFC 2047 encoded-words):
- unstructured text (Subject, a display name) that is not ASCII becomes encoded-words of at most
  75 characters each, one per folded line, so no line holding one passes 76 (RFC 2047 section 2);
  a word never splits a character (section 5); ASCII text folds at spaces;
- address domains are written in IDNA A-labels (Punycode): `news@bücher.de` -> `news@xn--bcher-kva.de`;
- List-Unsubscribe is never encoded (RFC 2369 section 2 and RFC 8058 need the URL itself): its
  hosts are Punycode, anything else non-ASCII is percent-encoded, and a long value folds after a
  comma, between URLs.
Tests parse the output back with the stdlib parser (campaigns/tests/test_mime.py,
campaigns/tests/test_mime_headers.py).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from email.utils import formataddr, formatdate
from urllib.parse import quote, urlsplit, urlunsplit

import idna

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322 section 2.1.1: SHOULD; 998 is the hard limit
MAX_ENCODED_LINE = 76  # RFC 2047 section 2: a line holding an encoded-word
MAX_ENCODED_WORD = 75  # RFC 2047 section 2
_EW_START, _EW_END = "=?utf-8?b?", "?="
# Header fields whose value is a list of angle-bracketed URLs (RFC 2369): folded at commas, never encoded.
URL_LIST_HEADERS = frozenset({"list-unsubscribe", "list-help", "list-subscribe", "list-post", "list-owner",
                              "list-archive"})


def _one_line(value: str) -> str:
    return " ".join(value.split())  # no CR/LF can reach the wire: no header injection


def _encoded_words(text: str, first: int) -> list[str]:
    """`text` as base64 encoded-words, the first at most `first` characters long, the others at most
    75; each holds whole characters (RFC 2047 section 5: a word never splits a character)."""
    words: list[str] = []
    room = first
    chunk = b""
    for char in text:
        data = char.encode("utf-8")
        if chunk and len(_EW_START) + len(_EW_END) + 4 * -(-len(chunk + data) // 3) > room:
            words.append(_EW_START + base64.b64encode(chunk).decode("ascii") + _EW_END)
            chunk, room = b"", MAX_ENCODED_WORD
        chunk += data
    words.append(_EW_START + base64.b64encode(chunk).decode("ascii") + _EW_END)
    return words


def _fold_words(name: str, words: Sequence[str]) -> str:
    """Name and space-separated words on lines of at most 78 characters where the words allow
    (76 when the value holds encoded-words)."""
    limit = MAX_ENCODED_LINE if any(word.startswith(_EW_START) for word in words) else MAX_LINE
    lines = [f"{name}:"]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > limit and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + word
    return CRLF.join(lines)


def _text(name: str, value: str, *, first_room: int | None = None) -> list[str]:
    """Words of an unstructured value (Subject, a display name): ASCII as is, else encoded-words
    sized so the first fits after the header name on a 76-character line."""
    if value.isascii():
        return value.split(" ")
    room = first_room if first_room is not None else MAX_ENCODED_LINE - len(name) - 2
    return _encoded_words(value, min(MAX_ENCODED_WORD, room))


def _header(name: str, value: str) -> str:
    value = _one_line(value)
    if name.lower() in URL_LIST_HEADERS:
        return _url_list_header(name, value)
    if value.isascii() and len(name) + len(value) + 2 <= MAX_LINE:
        return f"{name}: {value}"
    return _fold_words(name, _text(name, value))


def _url_list_header(name: str, value: str) -> str:
    if not value.isascii():
        raise ValueError(f"{name} must be ASCII (build it with mime.list_unsubscribe): {value[:100]!r}")
    items = [item.strip() for item in value.split(",")]
    lines = [f"{name}: {items[0]}"]
    for item in items[1:]:
        lines[-1] += ","
        if len(lines[-1]) + 1 + len(item) > MAX_LINE:
            lines.append(" " + item)
        else:
            lines[-1] += " " + item
    return CRLF.join(lines)


def ascii_domain(domain: str) -> str:
    """A domain in IDNA A-labels (UTS 46 mapping, as contacts/emails.py canonicalises addresses)."""
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True).decode("ascii")


def ascii_address(address: str) -> str | None:
    """`local@domain` with the domain in Punycode; None when the local part is not ASCII (SMTPUTF8)."""
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None if address and not address.isascii() else address
    try:
        return f"{local}@{ascii_domain(domain)}"
    except idna.IDNAError:
        return None


def ascii_url(url: str) -> str:
    """A URL fit for a header: the host in Punycode, any other non-ASCII percent-encoded (UTF-8)."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    keep = "/%:@!$&'()*+,;=-._~?"
    if parts.scheme.lower() == "mailto":  # mailto:local@domain?subject=...: the address's domain
        local, _, domain = parts.path.rpartition("@")
        path = f"{quote(local, safe=keep.replace('@', ''))}@{ascii_domain(domain)}" if local else quote(parts.path)
        return urlunsplit((parts.scheme, "", path, quote(parts.query, safe=keep + "="), ""))
    host = parts.hostname or ""
    netloc = ascii_domain(host) + (f":{parts.port}" if parts.port else "")
    if "@" in parts.netloc:
        netloc = quote(parts.netloc.rpartition("@")[0], safe=":%") + "@" + netloc
    return urlunsplit((parts.scheme, netloc, quote(parts.path, safe=keep), quote(parts.query, safe=keep + "="),
                       quote(parts.fragment, safe=keep)))


def list_unsubscribe(urls: Sequence[str]) -> str:
    """The List-Unsubscribe value (RFC 2369): angle-bracketed ASCII URLs, comma-separated."""
    return ", ".join(f"<{ascii_url(url)}>" for url in urls)


def _from_header(name: str, address: str) -> str:
    if not name:
        return _header("From", address)
    if name.isascii():
        return _header("From", formataddr((name, address)))
    words = _encoded_words(_one_line(name), MAX_ENCODED_LINE - len("From: "))
    return _fold_words("From", [*words, f"<{address}>"])


def _qp(text: str) -> bytes:
    # Normalise newlines first; b2a_qp then keeps lines under 76 octets with soft breaks.
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n")


def build(*, subject: str, from_name: str, from_email: str, to: str, reply_to: str, text: str, html: str,
          headers: dict[str, str]) -> bytes | None:
    """The full message as bytes, or None when an address needs more than this writer does."""
    from_addr, to_addr = ascii_address(from_email), ascii_address(to)
    reply_addr = ascii_address(reply_to) if reply_to else ""
    if from_addr is None or to_addr is None or reply_addr is None:
        return None
    boundary = f"=_lf{secrets.token_hex(12)}"
    lines = [
        _from_header(from_name, from_addr),
        _header("To", to_addr),
        _header("Subject", subject),
        f"Date: {formatdate(usegmt=True)}",
        "MIME-Version: 1.0",
    ]
    if reply_addr:
        lines.append(_header("Reply-To", reply_addr))
    lines.extend(_header(name, value) for name, value in headers.items())
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = (CRLF.join(lines) + CRLF + CRLF).encode("ascii")
    part = "Content-Type: text/{}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    return b"".join([
        head,
        f"--{boundary}\r\n".encode(), part.format("plain").encode(), _qp(text), b"\r\n",
        f"--{boundary}\r\n".encode(), part.format("html").encode(), _qp(html), b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ])
