"""A minimal IMAP4rev1 server on loopback, for the bounce mailbox's tests (campaigns/bounce_mailbox.py).

No maintained pure-Python IMAP server on PyPI fits a test (pymap is not packaged for this
environment), so this implements only what Python's imaplib sends for the poller, following
RFC 3501 ("INTERNET MESSAGE ACCESS PROTOCOL - VERSION 4rev1"):

- greeting `* OK [CAPABILITY IMAP4rev1]` (7.1.1, 7.2.1); CAPABILITY, NOOP, LOGOUT (`* BYE`) (6.1);
- LOGIN user password, `NO` on bad credentials (6.2.3), with the RFC 5530 `[AUTHENTICATIONFAILED]` code;
- SELECT (6.3.1): FLAGS, EXISTS, RECENT, `OK [PERMANENTFLAGS (...)]` (with `\\*` when keywords may
  be created, 7.1), `OK [UIDVALIDITY n]`, `OK [UIDNEXT n]`, then `OK [READ-WRITE]`; `NO` for a
  missing mailbox;
- UID SEARCH (6.4.4, 6.4.8) with the keys ALL, SEEN, UNSEEN, FLAGGED, UNFLAGGED, KEYWORD k,
  UNKEYWORD k and a UID set, ANDed; answers `* SEARCH` with UIDs;
- UID FETCH (6.4.5, 6.4.8) of UID, FLAGS, RFC822.SIZE, BODY[] and BODY.PEEK[] (BODY[] sets \\Seen,
  the answer names it BODY[] either way, 7.4.2), the message as a literal `{n}` (4.3);
- UID STORE (6.4.6) +FLAGS, -FLAGS, FLAGS and their .SILENT forms; the answer is `* n FETCH (UID u FLAGS
  (...))` unless silent;
- sequence sets `1,3:5,7:*` (9, "sequence-set"); quoted strings and literals in commands (4.3, 4.4);
- TLS: implicit (`tls=True`, the port-993 convention of RFC 8314 section 3.3) or STARTTLS (6.2.1,
  advertised in CAPABILITY; `OK` then the handshake), with a self-signed certificate for 127.0.0.1
  made here (`cert_file`, for the client's trust store).

Knobs for tests: `keywords=False` leaves `\\*` out of PERMANENTFLAGS (a server that cannot keep our
keywords), `drop_on="STORE"` closes the connection when that command arrives (a crash mid-poll),
`commands` records every command received.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


@dataclass
class StoredMessage:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)


@dataclass
class Account:
    password: str
    folders: dict[str, list[StoredMessage]] = field(default_factory=lambda: {"INBOX": []})


class ImapServer:
    def __init__(self, *, keywords: bool = True) -> None:
        self.tls_context: ssl.SSLContext | None = None  # for STARTTLS
        self.cert_file = ""
        self.accounts: dict[str, Account] = {}
        self.keywords = keywords
        self.drop_on: str | None = None
        self.commands: list[str] = []
        self.uid_validity = 1
        self._next_uid = 1
        self.lock = threading.Lock()
        self.host = "127.0.0.1"
        self.port = 0

    def add_account(self, user: str, password: str, folders: tuple[str, ...] = ("INBOX",)) -> None:
        self.accounts[user] = Account(password=password, folders={name: [] for name in folders})

    def deliver(self, user: str, raw: bytes, *, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> int:
        with self.lock:
            uid = self._next_uid
            self._next_uid += 1
            self.accounts[user].folders[folder].append(StoredMessage(uid=uid, raw=raw, flags=set(flags)))
            return uid

    def messages(self, user: str, folder: str = "INBOX") -> list[StoredMessage]:
        return self.accounts[user].folders[folder]


class _Dropped(Exception):  # noqa: N818  the test asked for the connection to be cut
    pass


class _Handler(socketserver.StreamRequestHandler):
    server: Any

    def setup(self) -> None:
        super().setup()
        self.imap: ImapServer = self.server.imap
        self.user: str | None = None
        self.folder: str | None = None

    def handle(self) -> None:
        self._send(b"* OK [CAPABILITY IMAP4rev1] Leadflow test IMAP server ready")
        while True:
            line = self._read_command()
            if line is None:
                return
            tag, _, rest = line.partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "UID":
                sub, _, args = args.partition(" ")
                command = f"UID {sub.upper()}"
            self.imap.commands.append(f"{command} {args}".strip())
            if self.imap.drop_on and command.endswith(self.imap.drop_on):
                return  # the connection is cut with the command unanswered
            try:
                if not self._dispatch(tag, command, args):
                    return
            except (ValueError, IndexError, KeyError) as exc:
                self._send(f"{tag} BAD {exc}".encode())

    def _read_command(self) -> str | None:
        """One command line; a literal {n} (RFC 3501 4.3) is read after a continuation request."""
        data = b""
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return None
            data += line.rstrip(b"\r\n")
            literal = re.search(rb"\{(\d+)\}$", data)
            if literal is None:
                return data.decode("utf-8", "replace")
            self._send(b"+ Ready for literal data")
            count = int(literal.group(1))
            data = data[: literal.start()] + b'"' + self.rfile.read(count).replace(b'"', b'\\"') + b'"'

    def _send(self, line: bytes) -> None:
        self.wfile.write(line + b"\r\n")
        self.wfile.flush()

    def _dispatch(self, tag: str, command: str, args: str) -> bool:
        if command == "LOGOUT":
            self._send(b"* BYE Leadflow test IMAP server logging out")
            self._send(f"{tag} OK LOGOUT completed".encode())
            return False
        if command == "CAPABILITY":
            starttls = " STARTTLS" if self.imap.tls_context and not isinstance(self.connection, ssl.SSLSocket) else ""
            self._send(f"* CAPABILITY IMAP4rev1{starttls}".encode())
            self._send(f"{tag} OK CAPABILITY completed".encode())
        elif command == "STARTTLS" and self.imap.tls_context is not None:
            self._send(f"{tag} OK Begin TLS negotiation now".encode())
            self.connection = self.imap.tls_context.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb")
            self.wfile = self.connection.makefile("wb")
        elif command == "NOOP":
            self._send(f"{tag} OK NOOP completed".encode())
        elif command == "LOGIN":
            self._login(tag, _tokens(args))
        elif self.user is None:
            self._send(f"{tag} BAD log in first".encode())
        elif command in ("SELECT", "EXAMINE"):
            self._select(tag, _tokens(args)[0])
        elif self.folder is None:
            self._send(f"{tag} BAD select a mailbox first".encode())
        elif command == "UID SEARCH":
            self._search(tag, _tokens(args))
        elif command == "UID FETCH":
            uids, _, items = args.partition(" ")
            self._fetch(tag, uids, items)
        elif command == "UID STORE":
            uids, _, rest = args.partition(" ")
            action, _, flags = rest.partition(" ")
            self._store(tag, uids, action.upper(), flags)
        else:
            self._send(f"{tag} BAD unknown command {command}".encode())
        return True

    def _login(self, tag: str, args: list[str]) -> None:
        account = self.imap.accounts.get(args[0])
        if account is None or account.password != args[1]:
            self._send(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials".encode())
            return
        self.user = args[0]
        self._send(f"{tag} OK [CAPABILITY IMAP4rev1] LOGIN completed".encode())

    def _folder(self) -> list[StoredMessage]:
        assert self.user is not None
        assert self.folder is not None
        return self.imap.accounts[self.user].folders[self.folder]

    def _select(self, tag: str, name: str) -> None:
        assert self.user is not None
        folders = self.imap.accounts[self.user].folders
        found = next((f for f in folders if f == name or (f == "INBOX" and name.upper() == "INBOX")), None)
        if found is None:
            self._send(f"{tag} NO [NONEXISTENT] Mailbox does not exist".encode())
            return
        self.folder = found
        messages = folders[found]
        permanent = " ".join(SYSTEM_FLAGS) + (" \\*" if self.imap.keywords else "")
        self._send(f"* FLAGS ({' '.join(SYSTEM_FLAGS)})".encode())
        self._send(f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted".encode())
        self._send(f"* {len(messages)} EXISTS".encode())
        self._send(b"* 0 RECENT")
        self._send(f"* OK [UIDVALIDITY {self.imap.uid_validity}] UIDs valid".encode())
        self._send(f"* OK [UIDNEXT {self.imap._next_uid}] Predicted next UID".encode())
        self._send(f"{tag} OK [READ-WRITE] SELECT completed".encode())

    def _search(self, tag: str, keys: list[str]) -> None:
        messages = self._folder()
        matches = [m for m in messages if _matches(m, keys, messages)]
        self._send(("* SEARCH" + "".join(f" {m.uid}" for m in matches)).encode())
        self._send(f"{tag} OK UID SEARCH completed".encode())

    def _fetch(self, tag: str, uid_set: str, items: str) -> None:
        wanted = items.strip("()").upper().split()
        messages = self._folder()
        for seq, message in _in_set(messages, uid_set):
            parts = [f"UID {message.uid}".encode()]
            literal = b""
            for item in wanted:
                if item == "FLAGS":
                    parts.append(f"FLAGS ({' '.join(sorted(message.flags))})".encode())
                elif item == "RFC822.SIZE":
                    parts.append(f"RFC822.SIZE {len(message.raw)}".encode())
                elif item in ("BODY[]", "BODY.PEEK[]", "RFC822"):
                    if item != "BODY.PEEK[]":
                        message.flags.add("\\Seen")
                    literal = message.raw
                elif item != "UID":
                    raise ValueError(f"fetch item {item} not supported")
            head = f"* {seq} FETCH (".encode() + b" ".join(parts)
            if literal:
                self.wfile.write(head + f" BODY[] {{{len(literal)}}}\r\n".encode() + literal)
                self._send(b")")
            else:
                self._send(head + b")")
        self._send(f"{tag} OK UID FETCH completed".encode())

    def _store(self, tag: str, uid_set: str, action: str, flag_list: str) -> None:
        flags = set(flag_list.strip("()").split())
        if not self.imap.keywords and any(not f.startswith("\\") for f in flags):
            self._send(f"{tag} NO [CANNOT] keywords are not supported here".encode())
            return
        for seq, message in _in_set(self._folder(), uid_set):
            if action.startswith("+FLAGS"):
                message.flags |= flags
            elif action.startswith("-FLAGS"):
                message.flags -= flags
            elif action.startswith("FLAGS"):
                message.flags = set(flags)
            else:
                raise ValueError(f"store action {action} not supported")
            if not action.endswith(".SILENT"):
                self._send(f"* {seq} FETCH (UID {message.uid} FLAGS ({' '.join(sorted(message.flags))}))".encode())
        self._send(f"{tag} OK UID STORE completed".encode())


def _tokens(text: str) -> list[str]:
    """Atoms and quoted strings (RFC 3501 4.1, 4.3); backslash escapes in quoted strings."""
    tokens = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', text):
        quoted, atom = match.groups()
        tokens.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else atom)
    return tokens


def _in_set(messages: list[StoredMessage], uid_set: str) -> Iterator[tuple[int, StoredMessage]]:
    highest = max((m.uid for m in messages), default=0)
    ranges = []
    for piece in uid_set.split(","):
        low, _, high = piece.partition(":")
        start = highest if low == "*" else int(low)
        end = start if not high else highest if high == "*" else int(high)
        ranges.append((min(start, end), max(start, end)))
    for seq, message in enumerate(messages, start=1):
        if any(low <= message.uid <= high for low, high in ranges):
            yield seq, message


def _matches(message: StoredMessage, keys: list[str], messages: list[StoredMessage]) -> bool:
    index = 0
    while index < len(keys):
        key = keys[index].upper()
        if key == "ALL":
            ok = True
        elif key in ("SEEN", "UNSEEN", "FLAGGED", "UNFLAGGED"):
            flag = "\\Seen" if key.endswith("SEEN") else "\\Flagged"
            ok = (flag in message.flags) != key.startswith("UN")
        elif key in ("KEYWORD", "UNKEYWORD"):
            index += 1
            ok = (keys[index] in message.flags) != (key == "UNKEYWORD")
        elif key == "UID":
            index += 1
            ok = any(m is message for _, m in _in_set(messages, keys[index]))
        else:
            raise ValueError(f"search key {key} not supported")
        if not ok:
            return False
        index += 1
    return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    implicit_tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.implicit_tls is not None:
            sock = self.implicit_tls.wrap_socket(sock, server_side=True)
        return sock, address


def _certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate for IP 127.0.0.1 (and localhost), and its key: PEM file paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Leadflow test IMAP")])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = f"{directory}/imap-cert.pem", f"{directory}/imap-key.pem"
    with open(cert_file, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_file, key_file


@contextmanager
def imap_server(*, keywords: bool = True, tls: str = "") -> Iterator[ImapServer]:
    """An ImapServer listening on 127.0.0.1 (a free port) for the duration of the block. `tls`:
    "" (plain), "implicit" (TLS from the first byte) or "starttls" (offered, plain until asked)."""
    imap = ImapServer(keywords=keywords)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.imap = imap  # type: ignore[attr-defined]
    directory = tempfile.TemporaryDirectory()
    if tls:
        imap.cert_file, key_file = _certificate(directory.name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(imap.cert_file, key_file)
        if tls == "implicit":
            server.implicit_tls = context
        else:
            imap.tls_context = context
    imap.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield imap
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        directory.cleanup()
