"""Bounce mailboxes: for senders not on Amazon SES, the mailbox their Return-Path leads to.

Each poll logs in over IMAP (through core.outbound's address check), looks at the mails not yet
handled, reads each as a delivery status notification or feedback report (campaigns/dsn.py) and
applies it exactly like `POST /api/v1/bounces` does (campaigns.services.bounces_record): a hard
bounce or a complaint suppresses the address and marks the message, a soft bounce is an event.

Exactly once: a mail's row (BounceMailboxItem, unique per mailbox and the mail's Message-ID) is
written in the same transaction as its effects; only after the commit is the mail flagged in IMAP
(\\Seen plus the keyword $LeadflowDone). A poll that dies in between reads the mail again next
time, finds its row, and only flags it. A mail that is neither a report nor an automatic reply is
recorded as unparsed with the reason and left for a human: unread, flagged, keyword
$LeadflowUnparsed (on a server that cannot keep keywords: read and flagged). It never holds up
the mails after it.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from campaigns import dsn
from campaigns.models import BounceItemStatus, BounceMailboxItem, Message, SenderProfile
from campaigns.services import BounceReport, bounces_record, message_for_report
from contacts.emails import suppression_key
from core.outbound import CheckedIMAP4, CheckedIMAP4_SSL, host_problem
from core.secrets import SecretUnavailable, decrypt, env_name_problem, env_secret

log = logging.getLogger(__name__)

PASSWORD_ENV_PREFIX = "LEADFLOW_IMAP_"  # noqa: S105  a name prefix, not a password
DONE_KEYWORD = "$LeadflowDone"
UNPARSED_KEYWORD = "$LeadflowUnparsed"
TIMEOUT_SECONDS = 30
BATCH = 200  # mails per poll; the next poll (config/schedules.py) takes the rest
MAX_SIZE = 10 * 1024 * 1024  # a bounce is small; a larger mail is left for a human unread
SECURITY_PORTS = {"tls": 993, "starttls": 143, "plain": 143}


class MailboxError(Exception):
    """The mailbox could not be polled (settings, password, connection, login, folder); says which."""


@dataclass(frozen=True)
class MailboxConfig:
    host: str
    port: int
    security: str
    user: str
    password_env: str
    password_encrypted: str
    folder: str

    @property
    def identity(self) -> str:
        """Names the mailbox: senders sharing one are polled once, and its mails counted once."""
        return f"{self.user}@{self.host.lower()}:{self.port}/{self.folder}"[:400]


@dataclass
class PollResult:
    mailbox: str
    processed: int = 0
    ignored: int = 0
    unparsed: int = 0
    already: int = 0  # recorded by an earlier poll that died before flagging them
    left: int = 0  # beyond this poll's batch
    details: list[str] = field(default_factory=list)


# --- Settings -------------------------------------------------------------------------------------


def mailbox_config(sender: SenderProfile) -> MailboxConfig | None:
    if not sender.bounce_imap_host:
        return None
    security = sender.bounce_imap_security or "tls"
    return MailboxConfig(host=sender.bounce_imap_host.strip(), port=sender.bounce_imap_port or SECURITY_PORTS[security],
                         security=security, user=sender.bounce_imap_user, password_env=sender.bounce_imap_password_env,
                         password_encrypted=sender.bounce_imap_password_encrypted,
                         folder=sender.bounce_imap_folder or "INBOX")


def password_env_problem(name: str) -> str | None:
    return env_name_problem(name, prefix=PASSWORD_ENV_PREFIX, what="an IMAP password")


def bounce_mailbox_problems(sender: SenderProfile) -> dict[str, str]:
    """Field -> what is wrong with the sender's bounce mailbox settings (none when it has none)."""
    errors: dict[str, str] = {}
    if sender.bounce_imap_password_env and (problem := password_env_problem(sender.bounce_imap_password_env)):
        errors["bounce_imap_password_env"] = problem
    if not sender.bounce_imap_host:
        return errors
    if problem := host_problem(sender.bounce_imap_host.strip()):
        errors["bounce_imap_host"] = f"IMAP host {problem}"
    if sender.bounce_imap_security not in SECURITY_PORTS:
        errors["bounce_imap_security"] = f"one of {', '.join(SECURITY_PORTS)}"
    if sender.bounce_imap_port is not None and not 0 < sender.bounce_imap_port < 65536:
        errors["bounce_imap_port"] = "a port from 1 to 65535"
    if not sender.bounce_imap_user:
        errors["bounce_imap_user"] = "The mailbox's login is required with an IMAP host"
    if not sender.bounce_imap_password_env and not sender.bounce_imap_password_encrypted:
        errors["bounce_imap_password_env"] = f"Name an environment variable ({PASSWORD_ENV_PREFIX}...) holding " \
                                             "the password, or store one"
    folder = sender.bounce_imap_folder or "INBOX"
    if not (folder.isascii() and folder.isprintable()) or '"' in folder or "\\" in folder:
        errors["bounce_imap_folder"] = "An ASCII folder name without quotes or backslashes, e.g. INBOX or INBOX/Bounces"
    return errors


def _password(config: MailboxConfig) -> str:
    try:
        if config.password_env:
            return env_secret(config.password_env, problem=password_env_problem(config.password_env))
        return decrypt(config.password_encrypted)
    except SecretUnavailable as exc:
        raise MailboxError(f"bounce mailbox {config.identity}: password: {exc}") from None


# --- Polling --------------------------------------------------------------------------------------


def bounce_mailboxes_poll(*, sender_name: str | None = None) -> list[tuple[str, PollResult | MailboxError]]:
    """Poll every configured mailbox once (senders sharing a mailbox: once, with the first one's
    settings). One mailbox failing does not stop the others; each outcome is returned."""
    senders = SenderProfile.objects.exclude(bounce_imap_host="").order_by("id")
    if sender_name is not None:
        senders = senders.filter(name=sender_name)
    outcomes: list[tuple[str, PollResult | MailboxError]] = []
    polled: set[str] = set()
    for sender in senders:
        config = mailbox_config(sender)
        if config is None or config.identity in polled:
            continue
        polled.add(config.identity)
        try:
            outcomes.append((sender.name, bounce_mailbox_poll(sender=sender)))
        except MailboxError as exc:
            log.error("bounce mailbox of sender %s: %s", sender.name, exc)
            outcomes.append((sender.name, exc))
    return outcomes


def bounce_mailbox_poll(*, sender: SenderProfile) -> PollResult:
    config = mailbox_config(sender)
    if config is None:
        raise MailboxError(f"sender {sender.name} has no bounce mailbox (no IMAP host)")
    password = _password(config)
    result = PollResult(mailbox=config.identity)
    try:
        imap = _connect(config)
        try:
            imap.login(config.user, password)
            typ, data = imap.select(_quoted(config.folder))
            if typ != "OK":
                raise MailboxError(f"bounce mailbox {config.identity}: folder {config.folder!r}: {_text(data)}")
            keywords = _keywords_allowed(imap)
            _, validity = imap.response("UIDVALIDITY")
            uids = _unhandled(imap, keywords)
            result.left = max(0, len(uids) - BATCH)
            uids = uids[:BATCH]
            sizes = _sizes(imap, uids)
            for uid in uids:
                _handle(imap, sender, config, uid, sizes.get(uid, 0), keywords, _text(validity), result)
        finally:
            try:
                imap.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    except (imaplib.IMAP4.error, OSError) as exc:
        raise MailboxError(f"bounce mailbox {config.identity}: {_text(exc)}") from None
    return result


def _connect(config: MailboxConfig) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    if config.security == "tls":
        return CheckedIMAP4_SSL(config.host, config.port, ssl_context=context, timeout=TIMEOUT_SECONDS)
    imap = CheckedIMAP4(config.host, config.port, timeout=TIMEOUT_SECONDS)
    if config.security == "starttls":
        imap.starttls(context)
    return imap


def _keywords_allowed(imap: imaplib.IMAP4) -> bool:
    """RFC 3501 7.1: PERMANENTFLAGS with \\* lets us create keywords; without the code at all, every
    flag is permanent."""
    _, data = imap.response("PERMANENTFLAGS")
    flags = b" ".join(d for d in data if isinstance(d, bytes)) if data and data[0] is not None else None
    return flags is None or b"\\*" in flags


def _unhandled(imap: imaplib.IMAP4, keywords: bool) -> list[int]:
    criteria = ("UNKEYWORD", DONE_KEYWORD, "UNKEYWORD", UNPARSED_KEYWORD) if keywords else ("UNSEEN",)
    typ, data = imap.uid("SEARCH", *criteria)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID SEARCH: {_text(data)}")
    return sorted(int(u) for u in (data[0] or b"").split())


def _sizes(imap: imaplib.IMAP4, uids: list[int]) -> dict[int, int]:
    if not uids:
        return {}
    _, data = imap.uid("FETCH", ",".join(str(u) for u in uids), "(RFC822.SIZE)")
    sizes = {}
    for line in data:
        text = line if isinstance(line, bytes) else b""
        uid, size = re.search(rb"UID (\d+)", text), re.search(rb"RFC822\.SIZE (\d+)", text)
        if uid and size:
            sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


def _body(imap: imaplib.IMAP4, uid: int) -> bytes | None:
    _, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None  # expunged since the search


def _handle(imap: imaplib.IMAP4, sender: SenderProfile, config: MailboxConfig, uid: int, size: int,
            keywords: bool, validity: str, result: PollResult) -> None:
    report: dsn.Report | None = None
    if size > MAX_SIZE:
        raw, key, reason = b"", f"oversize:{validity}:{uid}", f"{size} bytes: too large for a bounce"
    else:
        body = _body(imap, uid)
        if body is None:
            return
        raw, key, reason = body, dsn.report_key(body), ""
        try:
            report = dsn.parse(raw)
        except dsn.Unparsed as exc:
            reason = str(exc)
    status = BounceMailboxItem.objects.filter(mailbox=config.identity, key=key).values_list("status", flat=True).first()
    if status is None:
        status = _record(sender, config, uid, key, raw, report, reason)
        if status is None:
            status = BounceMailboxItem.objects.filter(mailbox=config.identity, key=key).values_list(
                "status", flat=True).first() or BounceItemStatus.PROCESSED
            result.already += 1
        else:
            setattr(result, status, getattr(result, status) + 1)
            result.details.append(f"UID {uid}: {status}" + (f" ({reason[:200]})" if reason else ""))
    else:
        result.already += 1
    _flag(imap, uid, status, keywords)


def _record(sender: SenderProfile, config: MailboxConfig, uid: int, key: str, raw: bytes,
            report: dsn.Report | None, reason: str) -> str | None:
    """The mail's row and its effects, in one transaction; None if another poll recorded it first."""
    if report is None:
        status, kind = BounceItemStatus.UNPARSED, ""
    elif report.kind == dsn.IGNORED:
        status, kind, reason = BounceItemStatus.IGNORED, dsn.IGNORED, report.reason
    else:
        status, kind = BounceItemStatus.PROCESSED, report.kind
    try:
        with transaction.atomic():
            item = BounceMailboxItem.objects.create(mailbox=config.identity, key=key, sender=sender, uid=uid,
                                                    status=status, kind=kind, subject=dsn.subject_of(raw),
                                                    reason=reason[:2000])
            if status == BounceItemStatus.PROCESSED and report is not None:
                item.recipients = _apply(report, source=f"bounce mailbox {config.identity}"[:100])
                item.save(update_fields=["recipients"])
    except IntegrityError:
        return None
    return status


def _apply(report: dsn.Report, *, source: str) -> list[dict[str, Any]]:
    """bounces_record for the report's recipients we actually sent to; the outcome per recipient."""
    recipients = list(report.recipients)
    if report.kind == dsn.COMPLAINT and report.message_id:
        # Providers redact the complainant; our Message-ID (random, unguessable) names the message,
        # and so its recipient. The guessable X-Leadflow-Message must match an address as well.
        message = _by_header_id(report.message_id)
        if message is not None and message.to_email:
            recipients = [dsn.Recipient(email=message.to_email, kind=dsn.COMPLAINT, detail="feedback: abuse")]
    reports, outcomes = [], []
    for recipient in recipients:
        email = suppression_key(recipient.email)
        message = message_for_report(email=email, relay_message_id=report.relay_id,
                                     provider_message_id=report.message_id, leadflow_id=report.leadflow_id)
        outcome: dict[str, Any] = {"email": email[:254], "kind": recipient.kind, "status": recipient.status,
                                   "message": message.pk if message else None}
        if message is None:
            # Anyone can mail this mailbox: an address we never sent to is not ours to suppress.
            outcome["outcome"] = "unknown: no message was sent to this address"
        else:
            reports.append(BounceReport(email=email, kind=recipient.kind, detail=recipient.detail,
                                        provider_message_id=report.message_id, relay_message_id=report.relay_id,
                                        leadflow_id=report.leadflow_id))
            outcome["outcome"] = "event only (soft)" if recipient.kind == dsn.SOFT else "suppressed"
        outcomes.append(outcome)
    bounces_record(reports=reports, source=source)
    return outcomes


def _by_header_id(message_id: str) -> Message | None:
    pid = message_id.strip()
    if not pid:
        return None
    bracketed = pid if pid.startswith("<") else f"<{pid}>"
    return Message.objects.filter(provider_message_id__in={pid, bracketed}).order_by("-id").first()


def _flag(imap: imaplib.IMAP4, uid: int, status: str, keywords: bool) -> None:
    if status == BounceItemStatus.UNPARSED:
        # Left for a human: unread and flagged (a server without keywords: read, or every poll would see it).
        flags = f"({UNPARSED_KEYWORD} \\Flagged)" if keywords else "(\\Seen \\Flagged)"
    else:
        flags = f"(\\Seen {DONE_KEYWORD})" if keywords else "(\\Seen)"
    typ, data = imap.uid("STORE", str(uid), "+FLAGS.SILENT", flags)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID STORE {uid}: {_text(data)}")


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: Any) -> str:
    """An IMAP answer or error as text (imaplib gives bytes, lists of bytes, or exceptions)."""
    if isinstance(value, list):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")[:300]
    return str(value)[:300]
