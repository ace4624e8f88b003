"""Throttled delivery of the outbox: claim a batch, apply the send-time rules, render, send over
one connection, record each result.

Exactly-once, as far as SMTP allows: a message is claimed with a conditional UPDATE (status
queued/deferred -> sending, with a fresh claim token), and its result is written right after its
own send, so a worker killed mid-batch leaves at most the message in flight unrecorded. The
sweeper puts claims older than DELIVERY_STALE_SECONDS back in the queue; that one message may
then go twice, nothing is lost.

Rate: every worker draws from one GCRA budget per sender in Redis (core.throttle), plus one
per limited recipient domain. Redis holds no state we need: the "go look" signal (delivery_kick)
is re-sent by the sweeper, and a flushed throttle only allows one burst early.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html as html_lib
import logging
import random
import re
import smtplib
import time
import uuid
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formataddr, make_msgid
from typing import Any

import psycopg
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Count, F, Field, Q
from django.utils import timezone
from redis.exceptions import RedisError
from rq import get_current_job
from rq.worker import BaseWorker

from campaigns import delivery_rules, dkim_signing, mime, rendering, tracking
from campaigns.models import (
    PENDING_STATUSES,
    Message,
    MessageKind,
    MessageStatus,
    SenderProfile,
    Suppression,
    SuppressionReason,
    email_hash,
)
from campaigns.utm import utm_apply, utm_for_message
from consent.selectors import topic_refusals
from contacts.emails import InvalidEmail, email_canonical, suppression_key
from contacts.models import ConsentStatus, contact_scores_set, with_contact_scores
from core import tracing
from core.logs import rows_extra
from core.outbound import checked_backend
from core.queues import get_connection as redis_connection
from core.queues import get_queue
from core.services import switch_paused

log = logging.getLogger(__name__)

RUN_JOB = "campaigns.tasks.delivery_run_job"
TEST_SOURCE = "admin test"  # Message.source of an admin's "send test"
# Seconds a kick lives: longer than a job runs (DELIVERY_JOB_SECONDS), so a live job's kick holds;
# a kick whose job was lost (Redis flushed, worker killed) expires and the sweeper kicks again.
KICK_TTL = 120


# --- The "go look" signal -----------------------------------------------------------------------


def _kick_key(sender_id: int, slot: int) -> str:
    return f"leadflow:delivery:kick:{sender_id}:{slot}"


def delivery_kick(sender_id: int) -> int:
    """Make sure up to DELIVERY_PARALLEL jobs will look at this sender's queue; returns how many
    were enqueued. Call after COMMIT (inside a transaction it defers itself)."""
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: delivery_kick(sender_id))
        return 0
    enqueued = 0
    try:
        conn = redis_connection()
        for slot in range(settings.DELIVERY_PARALLEL):
            # One job per slot at a time: a burst of 500 new messages is one kick, not 500 jobs.
            if conn.set(_kick_key(sender_id, slot), "1", nx=True, ex=KICK_TTL):
                get_queue("delivery").enqueue(RUN_JOB, sender_id, slot)
                enqueued += 1
    except RedisError:
        # The message rows are committed; the sweeper kicks again within a minute.
        log.warning("delivery: Redis unavailable, sender %s waits for the sweeper", sender_id, exc_info=True)
    return enqueued


def _release_kick(sender_id: int, slot: int | None) -> None:
    if slot is None:
        return
    try:
        redis_connection().delete(_kick_key(sender_id, slot))
    except RedisError:
        log.warning("delivery: could not release kick %s/%s", sender_id, slot, exc_info=True)


# --- Claiming -----------------------------------------------------------------------------------


def _due(sender_id: int, now: dt.datetime) -> Any:
    return Message.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        sender_id=sender_id, status__in=PENDING_STATUSES,
    )


# Due messages looked at per claim, as a multiple of its size: enough to see every cause waiting
# behind a burst (2,000 registrations, a few signups) without reading a whole campaign's backlog.
FAIR_WINDOW = 20


def messages_claim(*, sender_id: int, limit: int, now: dt.datetime) -> list[Message]:
    """Claim up to `limit` due messages of the sender (queued/deferred -> sending), shared fairly
    between their causes (`fair_order`): a signup's welcome email queued behind 2,000 of a
    burst's goes in the next batch, not after the burst. Returned in that order (it is the send
    order). The claim is a conditional UPDATE of rows locked with SKIP LOCKED (PostgreSQL), so
    concurrent workers take disjoint batches; one that finds its first choices taken moves on to
    the next ones in the order."""
    token = uuid.uuid4()
    due = _due(sender_id, now)
    window = limit * FAIR_WINDOW
    seen = list(due.order_by("next_attempt_at", "id").values_list("id", "correlation_id")[:window])
    if len(seen) == window:  # a backlog longer than the window: the newest arrivals are candidates too
        # (message_due_idx read backwards: new messages have no next_attempt_at, NULLS FIRST)
        newest = due.order_by(F("next_attempt_at").desc(nulls_first=True), "-id")
        seen += newest.values_list("id", "correlation_id")[:limit]
    ranked = fair_order(seen)
    position = {pk: i for i, pk in enumerate(ranked)}
    with transaction.atomic():
        ids: list[int] = []
        for start in range(0, len(ranked), limit):
            if len(ids) >= limit:
                break
            chunk = ranked[start:start + limit]
            # Still due, not only still pending: another worker may have deferred one (a retry's
            # backoff) since the read above. The locked rows come in no particular order, so the
            # cut below keeps the best-ranked.
            ids += sorted(_due(sender_id, now).filter(pk__in=chunk).select_for_update(skip_locked=True)
                          .values_list("id", flat=True), key=position.__getitem__)
        ids = ids[:limit]
        if not ids:
            return []
        Message.objects.filter(pk__in=ids, status__in=PENDING_STATUSES).update(
            status=MessageStatus.SENDING, claim_token=token, claimed_at=now, updated_at=now,
        )
    claimed = contact_scores_set(list(with_contact_scores(
        Message.objects.filter(claim_token=token, status=MessageStatus.SENDING)
        .select_related("contact", "template", "revision"))))
    return sorted(claimed, key=lambda m: position.get(m.pk, len(position)))


def fair_order(rows: Sequence[tuple[int, str]]) -> list[int]:
    """Message ids (given as (id, correlation id) in due order) in the order they should go:
    causes take turns, smallest first (a single signup before a burst's 500; of equal ones, the
    one queued first), each cause's own messages in due order. Messages without a correlation id count as one cause."""
    causes: dict[str, list[int]] = {}
    seen: set[int] = set()  # the newest-arrivals query may repeat ids of the window
    for pk, cause in rows:
        if pk not in seen:
            seen.add(pk)
            causes.setdefault(cause or "", []).append(pk)
    active = sorted(causes.values(), key=lambda group: (len(group), min(group)))
    ranked: list[int] = []
    turn = 0
    while active:
        ranked += [group[turn] for group in active]
        turn += 1
        active = [g for g in active if len(g) > turn]
    return ranked


# --- Outcomes -----------------------------------------------------------------------------------


@dataclass
class BatchResult:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    sent: list[tuple[int, str]] = field(default_factory=list)  # (message id, correlation id), for the log
    handed_over: bool = False  # stopped early for other queues (HANDOVER_BATCH); the rest was re-queued

    def add(self, status: str, n: int = 1) -> None:
        self.outcomes[status] += n


def _finish(messages: Sequence[Message], result: BatchResult, *, status: str, reason: str = "",
            error: str = "", next_attempt_at: dt.datetime | None = None) -> None:
    """One UPDATE for a group of claimed messages with the same outcome."""
    if not messages:
        return
    now = timezone.now()
    Message.objects.filter(pk__in=[m.pk for m in messages], status=MessageStatus.SENDING).update(
        status=status, reason=reason, last_error=error[:2000], next_attempt_at=next_attempt_at,
        claim_token=None, updated_at=now,
    )
    result.add(status, len(messages))


def backoff(attempts: int) -> dt.timedelta:
    """Exponential from 30 s, capped at 1 h, with full jitter (half to all of the step)."""
    step = min(settings.DELIVERY_BACKOFF_SECONDS * 2 ** max(0, attempts - 1), 3600)
    return dt.timedelta(seconds=step * random.uniform(0.5, 1.0))  # noqa: S311  jitter, not crypto


# --- Send-time rules (set-based over the batch) --------------------------------------------------


@dataclass(frozen=True)
class Withheld:
    """What a higher app's hold (delivery_hold_register) makes of a claimed message: finished
    (SUPPRESSED) or held (DEFERRED until next_attempt_at), with the reason and the error text."""

    status: str
    reason: str
    error: str
    next_attempt_at: dt.datetime | None = None


# Rules of the apps above campaigns, applied to every claimed batch before anything else: a
# broadcast cancelled or paused after its messages were queued (broadcasts/delivery_hold.py). They
# register here from their AppConfig.ready, so campaigns never imports them (STYLE.md 16). Each
# takes the batch and answers message id -> Withheld, set-based (no query per message). They run
# in one transaction with the UPDATEs, so a hold may lock what it read (a resume must not slip in).
_holds: list[Callable[[Sequence[Message]], dict[int, Withheld]]] = []


def delivery_hold_register(hold: Callable[[Sequence[Message]], dict[int, Withheld]]) -> None:
    if hold not in _holds:
        _holds.append(hold)


def _withhold(messages: list[Message], result: BatchResult) -> list[Message]:
    """Apply the registered holds (one UPDATE per outcome); returns the messages they let through."""
    withheld: dict[int, Withheld] = {}
    with transaction.atomic():
        for hold in _holds:
            withheld = {**hold(messages), **withheld}  # the first registered wins
        groups: dict[Withheld, list[Message]] = {}
        for message in messages:
            if message.pk in withheld:
                groups.setdefault(withheld[message.pk], []).append(message)
        for outcome, group in groups.items():
            _finish(group, result, status=outcome.status, reason=outcome.reason, error=outcome.error,
                    next_attempt_at=outcome.next_attempt_at)
    return [m for m in messages if m.pk not in withheld]


def _suppression_reasons(messages: Sequence[Message]) -> dict[int, str]:
    """Message id -> why it must not be sent. One query for the suppression list, keyed on the
    canonical address: a contact row from before the canonical rule (a fullwidth or upper-case
    domain) still finds its entry, and one the rule refuses (a soft hyphen or zero-width space,
    which some relays drop on the way to the real mailbox) is never sent at all."""
    reasons: dict[int, str] = {}
    hashes: dict[int, str] = {}
    for message in messages:
        try:
            # An internal email (to staff) is checked against its own address, never the contact's.
            hashes[message.pk] = email_hash(email_canonical(message.to_email if message.internal
                                                            else message.contact.email))
        except InvalidEmail:
            reasons[message.pk] = "invalid_address"
    # A test or staging copy goes to its redirect address (a tester's): that address's own entry
    # counts too, so a copy never goes to an address that hard-bounced or complained.
    redirects = {m.pk: email_hash(m.redirect_to) for m in messages if m.redirect_to}
    listed = dict(Suppression.objects.filter(email_hash__in=set(hashes.values()) | set(redirects.values()))
                  .values_list("email_hash", "reason"))
    for message in messages:
        if message.pk in reasons:
            continue
        marketing = message.kind == MessageKind.MARKETING
        listed_reason = listed.get(redirects.get(message.pk, "")) or listed.get(hashes[message.pk])
        if listed_reason and (marketing or listed_reason != SuppressionReason.UNSUBSCRIBED):
            reasons[message.pk] = listed_reason
        elif marketing and message.contact.consent_status == ConsentStatus.WITHDRAWN:
            reasons[message.pk] = "unsubscribed"
        elif marketing and settings.EMAIL_REQUIRE_CONSENT and message.contact.consent_status != ConsentStatus.GRANTED:
            reasons[message.pk] = "no_consent"
    return {**topic_refusals(messages), **reasons}  # a contact who left the template's topic (issue 20)


def _over_frequency_cap(sender: SenderProfile, messages: Sequence[Message], now: dt.datetime) -> set[int]:
    if not sender.frequency_cap:
        return set()
    marketing = [m for m in messages if m.kind == MessageKind.MARKETING and not m.is_test]
    if not marketing:
        return set()
    since = now - dt.timedelta(days=sender.frequency_days)
    sent = Counter(dict(
        Message.objects.filter(contact_id__in={m.contact_id for m in marketing}, status=MessageStatus.SENT,
                               kind=MessageKind.MARKETING, sent_at__gte=since)
        .values_list("contact_id").annotate(n=Count("id")).values_list("contact_id", "n")
    ))
    over: set[int] = set()
    for message in marketing:  # two in one batch to the same contact count against each other
        if sent[message.contact_id] >= sender.frequency_cap:
            over.add(message.pk)
        else:
            sent[message.contact_id] += 1
    return over


def _warmup_allowance(sender: SenderProfile, now: dt.datetime) -> tuple[int | None, dt.datetime]:
    """(messages still allowed today or None for no cap, start of tomorrow in the sender's zone)."""
    local_now = now.astimezone(zoneinfo.ZoneInfo(sender.time_zone))
    day_start = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = (day_start + dt.timedelta(days=1)).astimezone(dt.UTC)
    cap = delivery_rules.warmup_cap(sender, local_now.date())
    if cap is None:
        return None, tomorrow
    sent_today = Message.objects.filter(sender=sender, status=MessageStatus.SENT, sent_at__gte=day_start).count()
    return max(0, cap - sent_today), tomorrow


def _apply_rules(sender: SenderProfile, messages: list[Message], result: BatchResult,
                 now: dt.datetime) -> list[Message]:
    """Suppress, cap or defer what must not go now; returns the messages to send."""
    # First: a message claimed before its broadcast was cancelled or paused comes back here (the
    # sweeper, a deferral, a hand-over), whatever path it took.
    messages = _withhold(messages, result)
    reasons = _suppression_reasons(messages)
    by_reason: dict[str, list[Message]] = {}
    for message in messages:
        if message.pk in reasons:
            by_reason.setdefault(reasons[message.pk], []).append(message)
    for reason, group in by_reason.items():
        _finish(group, result, status=MessageStatus.SUPPRESSED, reason=reason,
                error=f"not sent: {SuppressionReason(reason).label if reason in SuppressionReason.values else reason}")
    rest = [m for m in messages if m.pk not in reasons]

    capped = _over_frequency_cap(sender, rest, now)
    _finish([m for m in rest if m.pk in capped], result, status=MessageStatus.SUPPRESSED, reason="frequency_cap",
            error=f"not sent: the contact already had {sender.frequency_cap} marketing emails in "
                  f"{sender.frequency_days} days")
    rest = [m for m in rest if m.pk not in capped]

    quiet_end = delivery_rules.quiet_until(sender, now)
    if quiet_end is not None:
        quiet = [m for m in rest if m.kind == MessageKind.MARKETING]
        _finish(quiet, result, status=MessageStatus.DEFERRED, reason="quiet_hours", next_attempt_at=quiet_end)
        rest = [m for m in rest if m.kind != MessageKind.MARKETING]

    allowance, tomorrow = _warmup_allowance(sender, now)
    if allowance is not None and len(rest) > allowance:
        _finish(rest[allowance:], result, status=MessageStatus.DEFERRED, reason="warmup_cap",
                next_attempt_at=tomorrow)
        rest = rest[:allowance]
    return rest


# --- Rendering ----------------------------------------------------------------------------------


def message_render(message: Message, sender: SenderProfile) -> None:
    """Fill the message's rendered fields (in memory). Raises rendering.TemplateInvalid."""
    if message.html:  # rendered at an earlier attempt: a retry sends the same email
        return
    if message.internal:
        _render_internal(message)
        return
    # The revision it was queued with (a workflow version's pin); older rows: the template's fields.
    content = message.revision if message.revision_id else message.template
    if content is None:
        raise rendering.TemplateInvalid("html", "the message has no template")
    fields, attributes = rendering.contact_data(message.contact)
    context = rendering.render_context(contact=fields, attributes=attributes, extra=message.context or {})
    parts = rendering.render_parts(subject=content.subject, html=content.html, text=content.text, context=context)
    utm = utm_for_message(message)  # before the layout: its unsubscribe link is never tagged
    body_html, links = rendering.rewrite_links(parts.html, lambda i: tracking.click_url(message.pk, i),
                                               tag=(lambda url: utm_apply(url, utm)) if utm else None)
    label = "TEST" if message.source == TEST_SOURCE else "STAGING"
    banner = f"{label.title()} email for {message.contact.email}" if message.redirect_to else ""
    html_out, text_out = rendering.wrap_layout(
        body_html=body_html, body_text=parts.text, subject=parts.subject,
        unsubscribe_url=tracking.unsubscribe_url(message.pk), postal_address=sender.postal_address,
        test_banner=banner,
    )
    pixel = f'<img src="{tracking.open_url(message.pk)}" width="1" height="1" alt="" style="display:none">'
    message.html = html_out.replace("</body>", pixel + "</body>", 1)
    message.text = text_out
    message.links = links
    message.subject = f"[{label}] {parts.subject}" if message.redirect_to else parts.subject
    # The canonical address (the suppression check above used the same form); an address the rule
    # refuses never gets here from delivery (previews keep it as stored).
    message.to_email = message.redirect_to or suppression_key(message.contact.email)


def _render_internal(message: Message) -> None:
    """Staff email (notify_sales): the queued subject and text as they are, no layout, no
    unsubscribe link, open pixel or click tracking (they would count staff as the contact)."""
    subject = " ".join(str((message.context or {}).get("subject", "")).split())  # no header injection
    text = str((message.context or {}).get("text", ""))
    message.subject = f"[STAGING] {subject}" if message.redirect_to else subject
    message.text = text
    message.html = f'<html><body><pre style="white-space:pre-wrap;font-family:inherit">{html_lib.escape(text)}' \
                   "</pre></body></html>"
    message.links = []
    message.to_email = message.redirect_to or message.to_email


def _headers(message: Message) -> dict[str, str]:
    headers = {"Message-ID": message.provider_message_id, "X-Leadflow-Message": str(message.pk)}
    if message.kind == MessageKind.MARKETING:
        # RFC 8058 one-click unsubscribe: mailbox providers POST to the URL. Marketing only: a
        # receipt or a password reset has no list to leave (and its recipient must still get it).
        # ASCII only (an IDN host in Punycode): an RFC 2047-encoded value is not a URL any more.
        headers["List-Unsubscribe"] = mime.list_unsubscribe([tracking.unsubscribe_url(message.pk)])
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def _email_for(message: Message, sender: SenderProfile, conn: Any) -> EmailMultiAlternatives:
    """Django's builder: for non-SMTP backends (console, file, locmem, anymail) and the odd
    message the lean writer declines (campaigns/mime.py)."""
    from_email = formataddr((sender.from_name, sender.from_email)) if sender.from_name else sender.from_email
    email = EmailMultiAlternatives(
        subject=message.subject, body=message.text, from_email=from_email, to=[message.to_email],
        reply_to=[sender.reply_to] if sender.reply_to else None, connection=conn, headers=_headers(message),
    )
    email.attach_alternative(message.html, "text/html")
    return email


# --- Sending ------------------------------------------------------------------------------------


class _ConnectionLost(Exception):
    pass


def _classify(exc: Exception) -> tuple[str, str, str]:
    """(status, reason, error text) for an exception raised while sending one message."""
    if isinstance(exc, dkim_signing.DkimUnavailable):
        # Not sent unsigned: receivers would judge the domain by mail without its signature. Retried
        # with backoff (the operator sets the key), failed after DELIVERY_MAX_ATTEMPTS.
        return MessageStatus.DEFERRED, "dkim_key", str(exc)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()), (0, b""))
        detail = f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
        return (MessageStatus.FAILED if code >= 500 else MessageStatus.DEFERRED,
                "rejected" if code >= 500 else "temporary_failure", f"recipient refused: {detail}")
    if isinstance(exc, smtplib.SMTPResponseException) and not isinstance(exc, smtplib.SMTPSenderRefused):
        error = exc.smtp_error
        detail = f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
        permanent = 500 <= exc.smtp_code < 600
        return (MessageStatus.FAILED if permanent else MessageStatus.DEFERRED,
                "rejected" if permanent else "temporary_failure", f"{type(exc).__name__}: {detail}")
    raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from exc


def _hard_bounce_codes(error: str) -> bool:
    # 550/551/553 at RCPT: the mailbox does not exist. Mailing it again hurts the sender's reputation.
    return error.startswith("recipient refused: 55") and error[len("recipient refused: "):][:3] in {"550", "551", "553"}


class _Sender:
    """One connection per batch, reopened once if the server drops it."""

    def __init__(self, sender: SenderProfile) -> None:
        self.sender = sender
        config = delivery_rules.backend_config(sender.email_url) if sender.email_url else {}
        backend = str(config.pop("backend")) if "backend" in config else None
        # A sender profile's SMTP host is typed into the admin: it may connect only to allowed
        # addresses (core.outbound). EMAIL_URL (no email_url) is the operator's own relay.
        backend = checked_backend(backend) if sender.email_url else backend
        self.conn = get_connection(backend, fail_silently=False, timeout=settings.EMAIL_TIMEOUT, **config)
        self.opened = False
        # The signing key, read once per batch; an unreadable one defers each message with the reason.
        self.dkim: dkim_signing.DkimKey | None = None
        self.dkim_error = ""
        try:
            self.dkim = dkim_signing.sender_key(domain=sender.dkim_domain, selector=sender.dkim_selector,
                                                key_env=sender.dkim_key_env, key_encrypted=sender.dkim_key_encrypted)
        except dkim_signing.DkimUnavailable as exc:
            self.dkim_error = str(exc)

    def open(self) -> None:
        if not self.opened:
            self.conn.open()
            _keep_data_reply(getattr(self.conn, "connection", None))
            self.opened = True

    def close(self) -> None:
        if self.opened:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001  closing a broken connection may fail; nothing to do
                log.debug("delivery: close failed", exc_info=True)
            self.opened = False

    def send(self, message: Message) -> str:
        """Send; returns the id the server answered DATA with (SES: its message id), or ""."""
        if self.dkim_error:
            raise dkim_signing.DkimUnavailable(self.dkim_error)
        self.open()
        smtp = getattr(self.conn, "connection", None) if isinstance(self.conn, SmtpBackend) else None
        if smtp is not None:
            smtp.leadflow_data_reply = None
        data = mime.build(subject=message.subject, from_name=self.sender.from_name,
                          from_email=self.sender.from_email, to=message.to_email, reply_to=self.sender.reply_to,
                          text=message.text, html=message.html, headers=_headers(message)) if smtp else None
        if data is not None and self.dkim is not None:
            # Over the exact bytes sent. Other backends (console, an HTTP provider) sign on their side.
            data = dkim_signing.sign(data, self.dkim)
        if smtp is not None and data is not None:
            smtp.sendmail(self.sender.from_email, [message.to_email], data)  # raises like Django's backend
        else:
            self.conn.send_messages([_email_for(message, self.sender, self.conn)])
        reply = getattr(smtp, "leadflow_data_reply", None)
        tracing.set_attributes(**{"smtp.reply_code": reply[0] if reply else None})
        return relay_message_id(reply[1]) if reply and reply[0] == 250 else ""


def _keep_data_reply(smtp: Any) -> None:
    """smtplib's sendmail() drops the server's reply to DATA, where Amazon SES puts the id its
    bounce, complaint and delivery notifications name ("250 Ok <id>"): keep the last reply on
    the connection (leadflow_data_reply), for any smtplib.SMTP class the backend uses."""
    if not isinstance(smtp, smtplib.SMTP) or getattr(smtp, "leadflow_keeps_reply", False):
        return
    send_data = smtp.data

    def data(msg: Any) -> tuple[int, bytes]:
        reply = send_data(msg)
        smtp.leadflow_data_reply = reply  # type: ignore[attr-defined]
        return reply

    setattr(smtp, "data", data)  # noqa: B010  an instance attribute: this connection only
    smtp.leadflow_keeps_reply = True  # type: ignore[attr-defined]


# SES: "Ok 0100018c5d1e2f3a-...-000000" (https://docs.aws.amazon.com/ses/latest/dg/smtp-response-codes.html);
# Postfix and most relays: "2.0.0 Ok: queued as 4Bx1Yz3nQ2".
_SES_REPLY = re.compile(r"(?:2\.\d{1,3}\.\d{1,3}\s+)?ok\s+(?:id=)?<?([^\s<>:]+)>?", re.IGNORECASE)
_QUEUED_AS = re.compile(r"queued as\s+<?([^\s<>]+?)>?\s*$", re.IGNORECASE)


def relay_message_id(reply: bytes | str) -> str:
    """The message id in a server's reply to DATA (text after the 250), or "" if it names none."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = text.strip()
    match = _SES_REPLY.fullmatch(text) or _QUEUED_AS.search(text)
    return match.group(1)[:255] if match else ""


def _record(message: Message, token: Any, **updates: Any) -> bool:
    updates.setdefault("updated_at", timezone.now())
    done = Message.objects.filter(pk=message.pk, claim_token=token, status=MessageStatus.SENDING).update(
        claim_token=None, **updates)
    if not done:
        log.warning("delivery: message %s was re-claimed while in flight (stale claim); it may go twice", message.pk)
    return bool(done)


@contextlib.contextmanager
def _async_commit() -> Iterator[None]:
    """Record results without waiting for the WAL flush (Postgres `synchronous_commit = off`).

    Each result is its own commit, so a killed worker repeats at most the message in flight; a
    flush per commit would cost more than the send itself. A *worker* dying loses nothing this
    way (the server has the commit); only a crash of the database server itself can lose the last
    ~0.6 s of results (3 x wal_writer_delay), and those messages would be sent again.
    """
    enabled = settings.DELIVERY_ASYNC_COMMIT and db_connection.vendor == "postgresql"
    if enabled:
        with db_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        if enabled:
            with db_connection.cursor() as cursor:
                cursor.execute("RESET synchronous_commit")


def _send_all(sender: SenderProfile, messages: list[Message], result: BatchResult, deadline: float,
              handover_after: int | None = None) -> None:
    throttle = delivery_rules.sender_throttle(sender)
    domains = delivery_rules.domain_throttles(sender)
    smtp = _Sender(sender)
    pending = _render_all(sender, messages, result)
    # Tokens are taken a few milliseconds' worth at a time (at least one): one Redis round trip
    # per message costs more than the send at high rates, while tokens held for at most ~5 ms
    # cannot bunch sends measurably past the limit at low ones.
    chunk = max(1, min(sender.burst, int(throttle.rate.count / throttle.rate.period * 0.005)))
    tokens = 0
    done = 0
    causes = Counter(m.correlation_id or "" for m in pending)
    marks = _SentMarks()
    try:
        with _async_commit():
            while pending:
                message = pending[0]
                domain = message.to_email.rpartition("@")[2].lower()
                if domain in domains and not message.redirect_to:
                    grant = domains[domain].take(1)
                    if not grant.granted:
                        pending.pop(0)
                        marks.drain()
                        _finish([message], result, status=MessageStatus.DEFERRED, reason="domain_rate",
                                next_attempt_at=timezone.now() + dt.timedelta(seconds=max(grant.wait, 1)))
                        continue
                if (handover_after is not None and done >= handover_after
                        and causes[message.correlation_id or ""] > SMALL_CAUSE):  # signups' emails go first, all
                    if _others_waiting():
                        result.handed_over = True
                        break  # the rest goes back to the queue, rendered: a later batch sends it
                    handover_after = done + HANDOVER_CHECK
                if not tokens:
                    tokens = throttle.acquire(min(chunk, len(pending)), max_wait=max(0.0, deadline - time.monotonic()))
                    if not tokens:
                        break  # the budget will not free up before the batch's deadline: hand the rest back
                tokens -= 1
                pending.pop(0)
                with tracing.cause_span("message.send", message.correlation_id, message_id=message.pk,
                                        attempt=message.attempts + 1, sender_id=sender.pk):
                    _send_one(sender, smtp, message, result, marks)
                done += 1
            marks.drain()
    finally:
        marks.drain()
        smtp.close()
        if pending:
            _finish(pending, result, status=MessageStatus.QUEUED, reason="")


_RENDERED_FIELDS = ("to_email", "subject", "html", "text", "links", "provider_message_id")


def _render_all(sender: SenderProfile, messages: list[Message], result: BatchResult) -> list[Message]:
    """Render the batch up front and store the content in one round trip, so the send loop only
    writes a small status update per message. Messages that fail to render fail here, each with
    its reason; the others are returned."""
    ready: list[Message] = []
    for message in messages:
        try:
            fresh = not message.html
            with tracing.cause_span("message.render", message.correlation_id, message_id=message.pk):
                message_render(message, sender)
        except rendering.TemplateInvalid as exc:
            _record(message, message.claim_token, status=MessageStatus.FAILED, reason="render_error",
                    last_error=str(exc), attempts=message.attempts + 1)
            result.add(MessageStatus.FAILED)
            continue
        if not message.provider_message_id:
            message.provider_message_id = make_msgid(domain=sender.from_email.rpartition("@")[2] or None)
            fresh = True
        ready.append(message)
        message._fresh = fresh  # type: ignore[attr-defined]
    _store_rendered([m for m in ready if getattr(m, "_fresh", False)])
    return ready


def _fields(names: Sequence[str]) -> list[Field[Any, Any]]:
    by_name = {f.name: f for f in Message._meta.concrete_fields}
    return [by_name[name] for name in names]


def _token_param(token: uuid.UUID | None) -> Any:
    # The UUID field knows each backend's storage (a uuid on Postgres, 32 hex chars on SQLite).
    return _fields(["claim_token"])[0].get_db_prep_value(token, db_connection)


# Raw SQL on the two hot writes; table and column names come from the model, values are parameters.
_STORE_SQL = "UPDATE {table} SET {assignments} WHERE id = %s AND claim_token = %s"
_SENT_SQL = ("UPDATE {table} SET status = %s, reason = '', last_error = '', attempts = %s, sent_at = %s, "
             "updated_at = %s, relay_message_id = %s, next_attempt_at = NULL, claim_token = NULL "
             "WHERE id = %s AND claim_token = %s AND status = %s")


def _store_rendered(messages: list[Message]) -> None:
    if not messages:
        return
    fields = _fields(_RENDERED_FIELDS)
    assignments = ", ".join(f"{db_connection.ops.quote_name(f.column)} = %s" for f in fields)
    rows = [
        [f.get_db_prep_save(getattr(m, f.attname), db_connection) for f in fields] + [m.pk, _token_param(m.claim_token)]
        for m in messages
    ]
    with db_connection.cursor() as cursor:
        # executemany: psycopg 3 pipelines it, so a batch of 500 is about one round trip.
        cursor.executemany(_STORE_SQL.format(table=Message._meta.db_table, assignments=assignments), rows)


def _mark_sent(message: Message, attempts: int, relay_id: str = "") -> bool:
    """The hot path's write: small, raw, one statement (its own commit: see _async_commit)."""
    now = timezone.now()
    with db_connection.cursor() as cursor:
        cursor.execute(
            _SENT_SQL.format(table=Message._meta.db_table),
            [MessageStatus.SENT.value, attempts, now, now, relay_id, message.pk, _token_param(message.claim_token),
             MessageStatus.SENDING.value],
        )
        done = cursor.rowcount == 1
    if not done:
        log.warning("delivery: message %s was re-claimed while in flight (stale claim); it may go twice", message.pk)
    return done


class _SentMarks:
    """Writes each "sent" mark while the next email is already going out (Postgres).

    The UPDATE is handed to the server (libpq's send-query: its own implicit transaction) and
    flushed to the socket before the next send starts; its reply is read just before the next
    mark or any other query. Bytes that reached the server are executed and committed even if
    this process is killed right after, so a SIGKILL still leaves only the message whose SMTP
    exchange was in flight unrecorded. If instead the database server ends the session (a restart)
    while a mark is pending, that mark is lost too: up to two messages may then go twice (measured
    by tests/test_webinar_burst.py). Elsewhere
    (SQLite, inside a transaction) marks are written synchronously.
    """

    _SQL = (
        "UPDATE {table} SET status = 'sent', reason = '', last_error = '', attempts = $1::integer, "
        "sent_at = $2::timestamptz, updated_at = $2::timestamptz, relay_message_id = $5::text, "
        "next_attempt_at = NULL, claim_token = NULL "
        "WHERE id = $3::bigint AND claim_token = $4::uuid AND status = 'sending'"
    )

    def __init__(self) -> None:
        self.pending: Message | None = None
        self.pipelined = (settings.DELIVERY_ASYNC_COMMIT and db_connection.vendor == "postgresql"
                          and not db_connection.in_atomic_block)
        self.sql = self._SQL.format(table=Message._meta.db_table).encode()

    def mark(self, message: Message, attempts: int, relay_id: str = "") -> None:
        self.drain()
        if not self.pipelined:
            _mark_sent(message, attempts, relay_id)
            return
        db_connection.ensure_connection()
        pgconn = db_connection.connection.pgconn
        params = [str(attempts).encode(), timezone.now().isoformat().encode(), str(message.pk).encode(),
                  str(message.claim_token).encode(), relay_id.encode()]
        pgconn.send_query_params(self.sql, params)
        while pgconn.flush():  # 1 while data remains: the statement must leave before the next send
            pass
        self.pending = message

    def drain(self) -> None:
        if self.pending is None:
            return
        message, self.pending = self.pending, None
        pgconn = db_connection.connection.pgconn
        updated = None
        while (res := pgconn.get_result()) is not None:
            if res.status == psycopg.pq.ExecStatus.COMMAND_OK:
                updated = int(res.command_tuples or 0)
            else:
                log.error("delivery: recording message %s failed: %s", message.pk,
                          (res.error_message or b"").decode(errors="replace"))
        if updated != 1:
            log.warning("delivery: message %s was re-claimed while in flight (stale claim); it may go twice",
                        message.pk)


def _send_one(sender: SenderProfile, smtp: _Sender, message: Message, result: BatchResult,
              marks: _SentMarks) -> None:
    attempts = message.attempts + 1
    try:
        relay_id = smtp.send(message)
    except Exception as exc:  # noqa: BLE001  classified below: every failure is recorded with its reason
        try:
            status, reason, error = _classify(exc)
        except _ConnectionLost as lost:
            smtp.close()  # the next message reopens; if the server is down it fails the same way
            status, reason, error = MessageStatus.DEFERRED, "connection", str(lost)
        marks.drain()
        tracing.set_attributes(outcome=str(status), reason=reason,
                               **{"smtp.reply_code": getattr(exc, "smtp_code", None)})
        _record_failure(message, message.claim_token, status=status, reason=reason, error=error, attempts=attempts)
        result.add(MessageStatus.DEFERRED if status == MessageStatus.DEFERRED else status)
        return
    marks.mark(message, attempts, relay_id)
    tracing.set_attributes(outcome="sent")
    result.add(MessageStatus.SENT)
    result.sent.append((message.pk, message.correlation_id))


def _record_failure(message: Message, token: Any, *, status: str, reason: str, error: str, attempts: int) -> None:
    if status == MessageStatus.DEFERRED and attempts >= settings.DELIVERY_MAX_ATTEMPTS:
        status, error = MessageStatus.FAILED, f"gave up after {attempts} attempts; last error: {error}"
    log.warning("delivery failure", extra={"message_id": message.pk, "contact_id": message.contact_id,
                                           "status": status, "reason": reason, "error": error[:300],
                                           "attempts": attempts, "correlation_id": message.correlation_id})
    next_at = timezone.now() + backoff(attempts) if status == MessageStatus.DEFERRED else None
    _record(message, token, status=status, reason=reason, last_error=error[:2000], attempts=attempts,
            next_attempt_at=next_at)
    if status == MessageStatus.FAILED and reason == "rejected" and _hard_bounce_codes(error):
        from campaigns.services import suppression_add

        suppression_add(email=message.contact.email, reason=SuppressionReason.HARD_BOUNCE, detail=error,
                        source=f"smtp:{message.pk}")
        # A hard bounce at RCPT counts in the sender's bounce rate like a provider's report (core/ops.py).
        Message.objects.filter(pk=message.pk).update(bounced_at=timezone.now())


# --- The batch ----------------------------------------------------------------------------------


def delivery_run_batch(*, sender: SenderProfile, now: dt.datetime | None = None,
                       batch_size: int | None = None, deadline: float | None = None,
                       handover_after: int | None = None) -> BatchResult:
    now = now or timezone.now()
    result = BatchResult()
    with tracing.span("delivery.claim", sender_id=sender.pk):
        messages = messages_claim(sender_id=sender.pk, limit=batch_size or settings.DELIVERY_BATCH_SIZE, now=now)
    result.claimed = len(messages)
    if not messages:
        return result
    # Each message's render and send are spans of its own cause's trace (tracing.cause_span).
    with tracing.batch("delivery.batch", (m.correlation_id for m in messages), fan_in=False,
                       sender_id=sender.pk, messages=len(messages)):
        sendable = _apply_rules(sender, messages, result, now)
        _send_all(sender, sendable, result, deadline or time.monotonic() + settings.DELIVERY_BATCH_SECONDS,
                  handover_after)
    # The sent messages under their correlation ids (one id for a batch from one event burst).
    log.info("delivery batch", extra={"sender_id": sender.pk, "claimed": result.claimed,
                                      **{f"n_{status}": n for status, n in result.outcomes.items()},
                                      **rows_extra("sent_message_ids", result.sent)})
    return result


def delivery_run(*, sender_id: int, slot: int | None = None, max_seconds: float | None = None) -> Counter[str]:
    """Deliver the sender's due messages, batch after batch, for up to `max_seconds`; then hand
    over to a fresh job if work remains (so one job never runs past RQ's timeout)."""
    totals: Counter[str] = Counter()
    try:
        sender = SenderProfile.objects.filter(pk=sender_id).first()
        if sender is None or sender.is_paused or switch_paused("sending"):
            return totals  # held, not lost: the rows stay queued and the sweeper offers them again
        budget = max_seconds if max_seconds is not None else settings.DELIVERY_JOB_SECONDS
        until = time.monotonic() + budget
        while time.monotonic() < until:
            deadline = min(until, time.monotonic() + settings.DELIVERY_BATCH_SECONDS)
            result = delivery_run_batch(sender=sender, deadline=deadline, handover_after=HANDOVER_BATCH)
            totals.update(result.outcomes)
            if not result.claimed or result.handed_over or _others_waiting():
                break
    finally:
        # Also when the job fails (the database restarting, say): a kick held by a dead job would
        # keep the sweeper from starting a new one until it expires.
        _release_kick(sender_id, slot)
    # Released first, checked second: a message committed after our last claim either sees the
    # kick free (and kicks) or is seen here.
    if _due(sender_id, timezone.now()).exists():
        delivery_kick(sender_id)
    return totals


# The latency-sensitive queues a delivery job makes way for: events (the pipeline) and default
# (workflow advances, wakes). Not crm or imports: a sync or import backlog would otherwise cut
# delivery to one batch per job of theirs, and they can wait for the next kick as well as email can.
HANDOVER_QUEUES = ("events", "default")
# A delivery batch stops after this many sends when they have jobs waiting (checked every
# HANDOVER_CHECK sends from then on; known only while sending: a signup's event arrives any time), and
# hands the rest back to the queue, rendered: ~0.35 s of sending on a quiet machine, so a signup's
# event job (and then its email, ranked first by fair_order) does not wait for 200 of a burst's
# (~1 s; issue 25). Not much fewer: each hand-over costs a claim (~30 ms), and at 50 a loaded
# machine sent fewer emails per turn than a steady stream of signups queued (measured: the backlog grew).
# It never stops before a message of a small cause (SMALL_CAUSE or fewer in the batch: signups
# ranked first): on a loaded machine more than HANDOVER_BATCH signups queue per turn, and handing
# over among them made the rest wait another events job (measured on PostgreSQL).
HANDOVER_BATCH = 100
HANDOVER_CHECK = 10
SMALL_CAUSE = 50  # messages of one cause (correlation id) in a batch; more is a burst's


def _others_waiting() -> bool:
    """Inside a worker's job: whether a latency-sensitive queue (HANDOVER_QUEUES) it serves has
    jobs waiting. Then the job hands over after its batch (the kick below queues a fresh one), so
    a backlog of emails never holds back an event job or a workflow advance on a worker that
    serves all queues (`manage.py worker` takes its queues in turns), and a burst's first emails
    go while the rest still advance."""
    job = get_current_job()
    if job is None:
        return False
    try:
        names = list(HANDOVER_QUEUES)
        # Only the queues this worker serves: a delivery-only worker has nobody to hand over to.
        worker_name = getattr(job, "worker_name", None)
        worker = BaseWorker.find_by_key(BaseWorker.redis_worker_namespace_prefix + worker_name,
                                        connection=redis_connection()) if worker_name else None
        if worker is not None:
            names = [name for name in worker.queue_names() if name in HANDOVER_QUEUES]
        return any(get_queue(name).count for name in names if name in settings.QUEUE_NAMES)
    except RedisError:
        return False


def delivery_sweep(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Put messages claimed by a dead worker back in the queue, and kick every sender with due
    work (its kick was lost with Redis, or a deferral came due). Safe to run any time."""
    now = now or timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.DELIVERY_STALE_SECONDS)
    requeued = Message.objects.filter(status=MessageStatus.SENDING, claimed_at__lt=stale_before).update(
        status=MessageStatus.QUEUED, claim_token=None, reason="requeued", updated_at=now,
        last_error="re-queued by the sweeper: the worker that claimed it stopped (it may have been sent once)",
    )
    due_senders = set(
        Message.objects.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
                               status__in=PENDING_STATUSES).values_list("sender_id", flat=True).distinct()
    )
    for sender_id in due_senders:
        # A kick whose job was lost expires after KICK_TTL, so this re-sends it at the latest then.
        delivery_kick(sender_id)
    return {"requeued": requeued, "senders_kicked": len(due_senders)}


def message_deliver(*, message_id: int) -> BatchResult:
    """Claim and deliver one message now, with the same rules and throttle as a batch."""
    result = BatchResult()
    message = Message.objects.select_related("sender").filter(pk=message_id).first()
    if message is None:
        return result
    now = timezone.now()
    token = uuid.uuid4()
    claimed = Message.objects.filter(pk=message_id, status__in=PENDING_STATUSES).update(
        status=MessageStatus.SENDING, claim_token=token, claimed_at=now, updated_at=now)
    if not claimed:
        return result
    result.claimed = 1
    [message] = contact_scores_set([with_contact_scores(Message.objects.select_related(
        "contact", "template", "revision", "sender")).get(pk=message_id)])
    sendable = _apply_rules(message.sender, [message], result, now)
    _send_all(message.sender, sendable, result, time.monotonic() + settings.DELIVERY_BATCH_SECONDS)
    return result
