"""Reading what arrives in a bounce mailbox: delivery status notifications and feedback reports.

- A DSN (RFC 3464) is a `multipart/report; report-type=delivery-status` whose `message/delivery-status`
  part holds one block of per-message fields, then one block per recipient (section 2.3):
  `Final-Recipient` / `Original-Recipient` (`rfc822; a@b`), `Action` (failed, delayed, delivered,
  relayed, expanded) and `Status` (class.subject.detail, RFC 3463: 5 permanent, 4 transient).
  The returned message (or its headers) follows as `message/rfc822` or `text/rfc822-headers`.
- A feedback report (ARF, RFC 5965) is a `multipart/report; report-type=feedback-report` whose
  `message/feedback-report` part says `Feedback-Type` (abuse: "this is spam") and may name the
  recipient in `Original-Rcpt-To`; the third part is the reported message or its headers. Mailbox
  providers often redact the recipient, so our own headers there are what finds the message.
- Anything else is either an automatic reply (RFC 3834 `Auto-Submitted`, vacation-style headers and
  subjects), which is ignored, or left for a human as unparsed with the reason.

parse() never raises anything but Unparsed, whatever the bytes: the mailbox is written to by strangers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from email.parser import HeaderParser
from email.utils import getaddresses

HARD, SOFT, COMPLAINT = "hard", "soft", "complaint"
BOUNCE, IGNORED = "bounce", "ignored"
MAX_KEY = 255
MAX_ADDRESS = 254  # RFC 5321's path limit
MAX_DETAIL = 2000

# RFC 3463 section 2: class "." subject "." detail, subject and detail 1 to 3 digits.
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+")
# Subjects of vacation replies from Exchange/Outlook ("Automatic reply:"), Gmail and others.
_AUTOREPLY_SUBJECT = re.compile(r"^\s*(automatic reply|auto[- ]?reply|auto:|out of (the )?office|"
                                r"abwesenheitsnotiz|réponse automatique|respuesta automática)", re.IGNORECASE)


class Unparsed(Exception):  # noqa: N818  what a human has to look at, with the reason
    """The mail is neither a usable report nor an automatic reply; the text says why."""


@dataclass(frozen=True)
class Recipient:
    email: str
    kind: str  # hard | soft | complaint
    status: str = ""  # 5.1.1 (DSNs)
    action: str = ""  # failed | delayed (DSNs)
    detail: str = ""  # Diagnostic-Code, else the status; the feedback type for complaints


@dataclass(frozen=True)
class Report:
    kind: str  # bounce | complaint | ignored
    recipients: tuple[Recipient, ...] = ()
    message_id: str = ""  # our Message-ID header, from the returned message or headers
    leadflow_id: int | None = None  # our X-Leadflow-Message header
    relay_id: str = ""  # the reporting MTA's queue id (Postfix's X-Postfix-Queue-ID: "queued as <id>")
    reason: str = ""  # why it is ignored
    notes: tuple[str, ...] = field(default=())  # recipients skipped (delivered, relayed...)


def report_key(raw: bytes) -> str:
    """What makes this mail unique in its mailbox: its Message-ID, else a hash of its bytes."""
    try:
        headers = HeaderParser(policy=policy.compat32).parsestr(raw.decode("ascii", "replace"), headersonly=True)
        message_id = _clean(str(headers.get("Message-ID") or "")).strip()
    except Exception:  # noqa: BLE001  any header garbage: fall back to the hash
        message_id = ""
    if message_id and len(message_id) <= MAX_KEY and message_id.isprintable():
        return message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def subject_of(raw: bytes) -> str:
    try:
        headers = HeaderParser(policy=policy.compat32).parsestr(raw.decode("ascii", "replace"), headersonly=True)
        return _decoded(headers.get("Subject"))[:300]
    except Exception:  # noqa: BLE001  a subject is for humans only
        return ""


def parse(raw: bytes) -> Report:
    try:
        return _parse(message_from_bytes(raw, policy=policy.compat32))
    except Unparsed:
        raise
    except Exception as exc:  # noqa: BLE001  hostile input must not stop the mailbox
        raise Unparsed(f"could not be read: {type(exc).__name__}: {str(exc)[:200]}") from None


def _parse(mail: EmailMessage) -> Report:
    report = next((part for part in mail.walk() if part.get_content_type() == "multipart/report"), None)
    if report is None:
        if (why := _autoreply(mail)) is not None:
            return Report(kind=IGNORED, reason=why)
        raise Unparsed("not a delivery status notification or feedback report (no multipart/report part)")
    report_type = str(report.get_param("report-type") or "").lower()
    payload = report.get_payload()
    parts = [p for p in payload if isinstance(p, EmailMessage)] if isinstance(payload, list) else []
    if not parts:
        raise Unparsed("multipart/report without parts")
    if report_type == "delivery-status":
        return _dsn(parts)
    if report_type == "feedback-report":
        return _arf(parts)
    if (why := _autoreply(mail)) is not None:
        return Report(kind=IGNORED, reason=why)
    raise Unparsed(f"a multipart/report of type {report_type[:60]!r} (expected delivery-status or feedback-report)")


def _autoreply(mail: EmailMessage) -> str | None:
    """RFC 3834 section 5: Auto-Submitted other than "no"; plus the headers vacation responders use."""
    auto = str(mail.get("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"automatic reply (Auto-Submitted: {auto[:40]})"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        if mail.get(name) is not None:
            return f"automatic reply ({name})"
    if str(mail.get("Precedence") or "").strip().lower() == "auto_reply":
        return "automatic reply (Precedence: auto_reply)"
    if _AUTOREPLY_SUBJECT.match(_decoded(mail.get("Subject"))):
        return "automatic reply (subject)"
    return None


# --- RFC 3464 -------------------------------------------------------------------------------------


def _dsn(parts: list[EmailMessage]) -> Report:
    status_part = next((p for p in parts if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        raise Unparsed("delivery-status report without a message/delivery-status part")
    payload = status_part.get_payload()
    blocks = [b for b in payload if isinstance(b, EmailMessage)] if isinstance(payload, list) else []
    if len(blocks) < 2:
        raise Unparsed("the message/delivery-status part names no recipient (RFC 3464 section 2.1)")
    per_message, per_recipient = blocks[0], blocks[1:]
    recipients, notes = [], []
    for index, block in enumerate(per_recipient, start=1):
        recipient = _dsn_recipient(block, index)
        if isinstance(recipient, str):
            notes.append(recipient)
        else:
            recipients.append(recipient)
    message_id, leadflow_id = _original_ids(parts)
    if not message_id:
        # Gmail's DSNs name the original in their per-message fields.
        message_id = _clean(str(per_message.get("X-Original-Message-ID") or ""))
    relay_id = _clean(str(per_message.get("X-Postfix-Queue-ID") or ""))[:255]
    if not recipients:
        return Report(kind=IGNORED, reason="no failed or delayed recipient: " + "; ".join(notes)[:500],
                      notes=tuple(notes))
    return Report(kind=BOUNCE, recipients=tuple(recipients), message_id=message_id, leadflow_id=leadflow_id,
                  relay_id=relay_id, notes=tuple(notes))


def _dsn_recipient(block: EmailMessage, index: int) -> Recipient | str:
    """A failed or delayed recipient; a string notes one that is neither (delivered, relayed...)."""
    where = f"recipient {index}"
    action = _clean(str(block.get("Action") or "")).lower()
    if not action:
        raise Unparsed(f"{where}: no Action field (RFC 3464 section 2.3.3)")
    address = _typed_address(block.get("Original-Recipient")) or _typed_address(block.get("Final-Recipient"))
    if not address:
        raise Unparsed(f"{where}: no rfc822 Final-Recipient or Original-Recipient address")
    if action not in ("failed", "delayed"):
        return f"{address}: {action[:20]}"
    raw_status = _clean(str(block.get("Status") or ""))
    match = _STATUS.match(raw_status)
    if match is None:
        raise Unparsed(f"{where}: Status {raw_status[:40]!r} is not a status code like 5.1.1 (RFC 3463)")
    status = match.group(0)
    if match.group(1) == "2":
        raise Unparsed(f"{where}: Action {action} with the success status {status}")
    # Only a failure with a permanent status is hard; a delay, or a failure after the MTA gave up on a
    # transient problem (RFC 3464 section 9.1's example: failed, 4.0.0), is soft: the address may work.
    kind = HARD if action == "failed" and match.group(1) == "5" else SOFT
    diagnostic = _clean(str(block.get("Diagnostic-Code") or ""))
    detail = f"{status} {diagnostic}" if diagnostic else f"{status} ({action})"
    return Recipient(email=address, kind=kind, status=status, action=action, detail=detail[:MAX_DETAIL])


def _typed_address(value: object) -> str:
    """`rfc822; user@example.com` (RFC 3464 section 2.3.2) -> the address; other types -> ""."""
    if value is None:
        return ""
    text = _clean(str(value))
    kind, sep, address = text.partition(";")
    if not sep or kind.strip().lower() != "rfc822":
        return ""
    return _address(address)


def _address(text: str) -> str:
    text = _clean(text).strip("<>").strip()
    if len(text) > MAX_ADDRESS or not _ADDRESS.fullmatch(text):
        return ""
    return text


# --- RFC 5965 -------------------------------------------------------------------------------------


def _arf(parts: list[EmailMessage]) -> Report:
    feedback_part = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if feedback_part is None:
        raise Unparsed("feedback report without a message/feedback-report part (RFC 5965 section 2)")
    fields = _fields(feedback_part)
    feedback_type = _clean(str(fields.get("Feedback-Type") or "")).lower()
    if not feedback_type:
        raise Unparsed("feedback report without Feedback-Type (RFC 5965 section 3.1)")
    message_id, leadflow_id = _original_ids(parts)
    if feedback_type != "abuse":
        return Report(kind=IGNORED, reason=f"feedback type {feedback_type[:40]!r} is not a spam complaint",
                      message_id=message_id, leadflow_id=leadflow_id)
    addresses = [_address(str(v)) for v in fields.get_all("Original-Rcpt-To") or []]
    if not any(addresses):
        # The reported message's To, unless the provider redacted it.
        original = _original_headers(parts)
        tos = original.get_all("To") or [] if original is not None else []
        addresses = [_address(a) for _, a in getaddresses([str(v) for v in tos])]
    recipients = tuple(dict.fromkeys(Recipient(email=a, kind=COMPLAINT, detail=f"feedback: {feedback_type}")
                                     for a in addresses if a))
    if not recipients and not message_id and leadflow_id is None:
        raise Unparsed("complaint names no recipient and carries none of our headers")
    return Report(kind=COMPLAINT, recipients=recipients, message_id=message_id, leadflow_id=leadflow_id)


def _fields(part: EmailMessage) -> EmailMessage:
    """The fields of a message/* part: Python parses message/feedback-report as a nested message
    (its payload a one-item list); some senders' parts arrive as text."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        first = payload[0]
        if isinstance(first, EmailMessage):
            return first
    return _header_block(part)


# --- The returned message -------------------------------------------------------------------------


def _original_headers(parts: list[EmailMessage]) -> EmailMessage | None:
    for part in parts:
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/rfc822-headers"):
            return _fields(part)
        if ctype == "text/rfc822-headers":
            return _header_block(part)
    return None


def _original_ids(parts: list[EmailMessage]) -> tuple[str, int | None]:
    """Our Message-ID and X-Leadflow-Message headers in the returned message, when it is there."""
    original = _original_headers(parts)
    if original is None:
        return "", None
    message_id = _clean(str(original.get("Message-ID") or ""))[:998]
    value = _clean(str(original.get("X-Leadflow-Message") or ""))
    leadflow_id = int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None
    return message_id, leadflow_id


# --- Helpers --------------------------------------------------------------------------------------


def _header_block(part: EmailMessage) -> EmailMessage:
    """A part whose body is a block of header fields (text/rfc822-headers), parsed as headers."""
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
    return HeaderParser(policy=policy.compat32).parsestr(text, headersonly=True)


def _clean(value: str) -> str:
    """A header value unfolded, without control characters (NUL and friends are not storable)."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())


def _decoded(value: object) -> str:
    if value is None:
        return ""
    try:
        return _clean(str(make_header(decode_header(str(value)))))
    except Exception:  # noqa: BLE001  a broken encoded-word: keep it as it is
        return _clean(str(value))
