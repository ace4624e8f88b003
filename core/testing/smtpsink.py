"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives: for tests and benches.

It can refuse chosen recipients permanently (550) or temporarily (451), refuse every connection
for a while (to play an outage), and slow each message down (to kill a worker mid-batch).

It accepts a message the way Amazon SES's SMTP interface does, "250 Ok <message id>" (SES's
"SMTP response codes" table: https://docs.aws.amazon.com/ses/latest/dg/smtp-response-codes.html),
with an id shaped like SES's (16 hex digits, a UUID, "-000000"); SES's notifications later name
the message by that id (mail.messageId). `received[i].relay_id` is the id it answered with.
"""

from __future__ import annotations

import email
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import Message as MimeMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from core.testing.pgcluster import free_port

logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float
    relay_id: str = ""  # the id the sink answered DATA with

    @property
    def message(self) -> MimeMessage:
        return email.message_from_bytes(self.data, policy=default_policy)

    def header(self, name: str) -> str:
        return str(self.message.get(name, "")).strip()


@dataclass
class SinkState:
    received: list[Received] = field(default_factory=list)
    reject_permanent: set[str] = field(default_factory=set)
    reject_temporary: set[str] = field(default_factory=set)
    refuse_until: float = 0.0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler:
    def __init__(self, state: SinkState) -> None:
        self.state = state

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if time.time() < self.state.refuse_until:
            return "421 4.3.2 Service not available, try later"
        if address.lower() in self.state.reject_permanent:
            return "550 5.1.1 User unknown"
        if address.lower() in self.state.reject_temporary:
            return "451 4.3.0 Mailbox temporarily unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.state.delay:
            import asyncio

            await asyncio.sleep(self.state.delay)
        content = envelope.original_content or b""
        relay_id = f"{time.time_ns() // 1_000_000:016x}-{uuid.uuid4()}-000000"
        with self.state.lock:
            self.state.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), content, time.time(),
                                                relay_id))
        return f"250 Ok {relay_id}"


class SmtpSink:
    """with SmtpSink() as sink: ... sink.port, sink.received, sink.state.reject_permanent.add(addr)."""

    def __init__(self, port: int | None = None) -> None:
        self.state = SinkState()
        self.port = port or free_port()
        self._controller = Controller(_Handler(self.state), hostname="127.0.0.1", port=self.port,
                                      data_size_limit=10 * 1024 * 1024)

    @property
    def received(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def ids(self) -> list[str]:
        """The X-Leadflow-Message header of every message received, in order."""
        return [r.header("X-Leadflow-Message") for r in self.received]

    def start(self) -> SmtpSink:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if getattr(self, "_running", False):
            self._controller.stop()
            self._running = False

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
