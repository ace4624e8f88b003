"""The one place Leadflow connects out from: HTTP (workflow webhooks and notify_sales, CRM
connectors, the alert webhook), the SMTP servers of sender profiles and their IMAP bounce mailboxes.

Every connection checks the address it is about to connect to, after DNS resolution, and connects
to exactly that address (the host name still goes in the Host header and TLS SNI/certificate
check), so a name that resolves to a public address when saved and to 127.0.0.1 later (DNS
rebinding) is refused too. Loopback, private, link-local (169.254.169.254: cloud metadata),
CGNAT, multicast, reserved and unspecified addresses are refused unless they fall within
OUTBOUND_ALLOWED_NETWORKS (an on-premise CRM, a local SMTP relay). Redirects are never followed:
a signed POST must not be replayed to wherever a 307 points. An error answer is described by its
status and the standard reason phrase only; its body is never stored or shown. A body is read up to
OUTBOUND_MAX_RESPONSE_BYTES (after decompression) and the call fails past it (ResponseTooLarge),
so a hostile or broken endpoint cannot stream gigabytes into a worker's memory.
"""

from __future__ import annotations

import functools
import http
import imaplib
import ipaddress
import smtplib
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services: link-local or private already, named so the message says what it is.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud (classic)
))
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared space: not private in Python, not public
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address
SETTING = "OUTBOUND_ALLOWED_NETWORKS"


class OutboundRefused(requests.exceptions.ConnectionError):
    """The destination is not allowed (an internal address), or the answer was a redirect."""


class ResponseTooLarge(requests.RequestException):  # noqa: N818  a failed call, like a timeout
    """The answer's body was larger than OUTBOUND_MAX_RESPONSE_BYTES; the rest was not read.
    `status`: the answer's status code (the call itself may have been applied)."""

    code = "response_too_large"

    def __init__(self, response: requests.Response, limit: int) -> None:
        self.status, self.limit = response.status_code, limit
        super().__init__(f"{self.code}: {urlsplit(response.url).hostname} answered {status_text(response)} with a "
                         f"body over OUTBOUND_MAX_RESPONSE_BYTES ({limit} bytes); the rest was not read",
                         response=response)


class _Refused(Exception):  # noqa: N818  raised inside urllib3, which must not retry or wrap it
    pass


# --- The address rule -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _networks(values: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def allowed_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return _networks(tuple(str(v) for v in getattr(settings, SETTING, ()) or ()))


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (::ffff:10.0.0.1, 64:ff9b::a00:1, 2002:a00:1::), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _kind(address: Address) -> str | None:
    """What makes `address` internal (None: a public address)."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (("is_unspecified", "an unspecified address"), ("is_loopback", "a loopback address"),
              ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"),
              ("is_reserved", "a reserved address"), ("is_private", "a private address"))
    for attribute, kind in checks:
        if getattr(address, attribute):
            return kind
    if address in CGNAT:
        return "a shared (CGNAT) address"
    if not address.is_global:
        return "not a public address"
    return None


def address_refusal(ip: str) -> str | None:
    """Why connecting to `ip` is refused, or None when it is allowed."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return f"{ip!r} is not an IP address"
    embedded = _embedded_ipv4(address)
    candidates = [address] if embedded is None else [embedded, address]
    networks = allowed_networks()
    if any(a in net for a in candidates for net in networks if a.version == net.version):
        return None
    for candidate in candidates:
        kind = _kind(candidate)
        if kind:
            return f"{address} is {kind}" if candidate == address else f"{address} (that is {candidate}) is {kind}"
    return None


def _refusal_text(host: str, reason: str) -> str:
    subject = reason if reason.startswith(host) else f"{host}: {reason}"
    return f"{subject}; connections to internal addresses are refused (a network listed in {SETTING} is allowed)"


def resolve_allowed(host: str, port: int, *, socktype: int = socket.SOCK_STREAM) -> list[tuple[Any, ...]]:
    """getaddrinfo(host, port), keeping only allowed addresses; raises _Refused if none is.

    socket.gaierror passes through (the name does not resolve)."""
    infos = socket.getaddrinfo(host, port, 0, socktype)
    allowed, refusals = [], []
    for info in infos:
        reason = address_refusal(str(info[4][0]))
        if reason is None:
            allowed.append(info)
        else:
            refusals.append(reason)
    if not allowed:
        raise _Refused(_refusal_text(host, refusals[0] if refusals else "no address"))
    return allowed


def url_problem(url: str) -> str | None:
    """A save-time check of an outbound URL: scheme, host, and an IP literal or local name that is
    refused. Names are not resolved here; the connect-time check covers them (and DNS rebinding)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  raises ValueError for a port out of range
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "use an http:// or https:// URL"
    if not parts.hostname:
        return "the URL names no host"
    return host_problem(parts.hostname)


def host_problem(host: str) -> str | None:
    """Save-time: a refused IP literal or a name that always means this machine."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            reason = address_refusal("127.0.0.1")
            return None if reason is None else _refusal_text(host, reason)
        return None
    reason = address_refusal(host)
    return None if reason is None else _refusal_text(host, reason)


# --- HTTP -----------------------------------------------------------------------------------------


class _CheckedConnectionMixin:
    """urllib3 connection whose socket goes only to an allowed, resolved address."""

    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        try:
            infos = resolve_allowed(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        last: OSError | None = None
        for info in infos:
            try:
                return urllib3_connection.create_connection(
                    (info[4][0], self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except TimeoutError as exc:
                raise ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})") from exc
            except OSError as exc:
                last = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class _CheckedHTTPConnection(_CheckedConnectionMixin, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_CheckedConnectionMixin, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class CheckedAdapter(HTTPAdapter):
    """A requests adapter whose pools use the checked connections, with no proxies."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("proxies"):
            raise OutboundRefused("outbound requests do not go through proxies", request=request)
        try:
            return super().send(request, *args, **kwargs)
        except _Refused as exc:
            raise OutboundRefused(str(exc), request=request) from None


class OutboundSession(requests.Session):
    """requests.Session for every outbound call: checked addresses, no redirects, no proxies from
    the environment (a proxy would connect on our behalf, unchecked)."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        adapter = CheckedAdapter(max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False  # a 3xx is the answer, whatever the caller asked
        if kwargs.get("stream"):
            return super().send(request, **kwargs)  # the caller reads the body itself, bounded
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        _read_bounded(response, settings.OUTBOUND_MAX_RESPONSE_BYTES)
        return response


def _read_bounded(response: requests.Response, limit: int) -> None:
    """Read the body into response.content (as requests would), failing past `limit` bytes."""
    declared = response.headers.get("Content-Length", "")
    try:
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(response, limit)
        chunks, total = [], 0
        for chunk in response.iter_content(chunk_size=64 * 1024):  # decoded: a gzip bomb counts in full
            total += len(chunk)
            if total > limit:
                raise ResponseTooLarge(response, limit)
            chunks.append(chunk)
    except BaseException:
        response.close()  # drop the connection: the unread rest must not reach the next request
        raise
    response._content = b"".join(chunks)  # what .content, .text and .json() read from now on


def session() -> OutboundSession:
    return OutboundSession()


def post(url: str, *, data: bytes, headers: dict[str, str], timeout: float) -> requests.Response:
    """One checked POST (no redirects); raises OutboundRefused or another requests exception."""
    with OutboundSession() as http_session:
        return http_session.post(url, data=data, headers=headers, timeout=timeout)


def status_text(response: requests.Response) -> str:
    """The status and its standard reason phrase (the server's own words and body are left out):
    "404 Not Found"; a redirect says it was not followed."""
    try:
        phrase = http.HTTPStatus(response.status_code).phrase
    except ValueError:
        phrase = ""
    text = f"{response.status_code} {phrase}".rstrip()
    if 300 <= response.status_code < 400:
        text += " (redirects are not followed)"
    return text


# --- SMTP (sender profiles) -----------------------------------------------------------------------


def _checked_socket(host: str, port: int, timeout: Any, source_address: Any, *,
                    what: str = "SMTP server") -> socket.socket:
    try:
        infos = resolve_allowed(host, port)
    except _Refused as exc:
        raise OutboundRefused(f"{what} {exc}") from None
    last: OSError | None = None
    for info in infos:
        try:
            return socket.create_connection((info[4][0], port), timeout, source_address)
        except OSError as exc:
            last = exc
    raise last or OSError(f"could not connect to {host}:{port}")


class CheckedSMTP(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        return _checked_socket(host, port, timeout, self.source_address)


class CheckedSMTP_SSL(smtplib.SMTP_SSL, CheckedSMTP):  # noqa: N801  SMTP_SSL wraps CheckedSMTP's socket
    pass


class CheckedSmtpBackend(SmtpBackend):
    """Django's SMTP backend, connecting only to allowed addresses (for sender profiles' email_url)."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return CheckedSMTP_SSL if self.use_ssl else CheckedSMTP


CHECKED_SMTP_BACKEND = f"{CheckedSmtpBackend.__module__}.{CheckedSmtpBackend.__qualname__}"
SMTP_BACKENDS = frozenset({"django.core.mail.backends.smtp.EmailBackend", CHECKED_SMTP_BACKEND})


def checked_backend(backend: str | None) -> str | None:
    """The backend to use for a sender profile's email_url: SMTP goes through the checked one."""
    return CHECKED_SMTP_BACKEND if backend in SMTP_BACKENDS else backend



# --- IMAP (sender profiles' bounce mailboxes, campaigns/bounce_mailbox.py) ------------------------


class CheckedIMAP4(imaplib.IMAP4):
    def _create_socket(self, timeout: float | None) -> socket.socket:
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        return _checked_socket(self.host, self.port, timeout, None, what="IMAP server")


class CheckedIMAP4_SSL(imaplib.IMAP4_SSL):  # noqa: N801  imaplib's naming
    def _create_socket(self, timeout: float | None) -> socket.socket:
        # IMAP4_SSL calls IMAP4._create_socket by name (not through super()), so the checked socket is
        # made here and wrapped the same way.
        sock = CheckedIMAP4._create_socket(self, timeout)  # type: ignore[arg-type]
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
