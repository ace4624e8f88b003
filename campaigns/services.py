"""Writes of the delivery domain: queue messages, retry them, suppress addresses, record what
recipients did (opens, clicks, unsubscribes) and what providers report (bounces, complaints)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.delivery import TEST_SOURCE, delivery_kick, message_render
from campaigns.models import (
    ENGAGEMENT_CAP,
    EngagementKind,
    Message,
    MessageEngagement,
    MessageKind,
    MessageStatus,
    SenderProfile,
    Suppression,
    SuppressionReason,
    email_hash,
)
from campaigns.utm import utm_clean
from contacts.emails import normalize_email, suppression_key
from contacts.ingest import enqueue_processing
from contacts.models import ConsentStatus, Contact, Event
from core.audit import audit_record
from core.logs import current_correlation_id, rows_extra

log = logging.getLogger(__name__)

TRACKING_SOURCE = "email"


class NoSender(LookupError):
    """No sender profile to send with: the admin must create one (and mark it default)."""


def sender_default() -> SenderProfile:
    sender = SenderProfile.objects.filter(is_default=True).first() or SenderProfile.objects.order_by("id").first()
    if sender is None:
        raise NoSender("no sender profile exists: create one under Campaigns > Sender profiles")
    return sender


@dataclass
class QueueItem:
    contact_id: int
    idempotency_key: str
    context: dict[str, Any] = field(default_factory=dict)
    redirect_to: str = ""
    correlation_id: str = ""  # the cause's (a workflow step: its enrollment's); "": the request's or job's


def messages_queue(*, template: Any, items: Sequence[QueueItem], sender: SenderProfile | None = None,
                   kind: str | None = None, source: str = "", is_test: bool = False,
                   revision: Any = None, utm: dict[str, str] | None = None) -> list[int]:
    """Queue one message per item, skipping idempotency keys already queued (the same cause twice
    makes one message). Call inside the transaction that records the cause: the rows commit with
    it and the delivery kick leaves after COMMIT. Returns the ids of the messages now queued for
    these keys (new or earlier). They render `revision` (a workflow version's pin, a test send's
    draft) and record it; without one, the template's fields when they are first sent.
    `utm`: UTM parameters for their tracked links (a campaign's; campaigns/utm.py), kept in each
    message's context; utm.UtmInvalid names what is wrong."""
    utm_set = utm_clean(utm, where="utm")
    sender = sender or sender_default()
    kind = kind or (revision or template).kind
    current = current_correlation_id()
    rows = [
        Message(contact_id=item.contact_id, template=template, revision=revision, sender=sender, kind=kind,
                idempotency_key=item.idempotency_key, context={**item.context, "utm": utm_set} if utm_set
                else item.context, source=source,
                redirect_to=item.redirect_to, is_test=is_test or bool(item.redirect_to),
                correlation_id=item.correlation_id or current)
        for item in items
    ]
    with transaction.atomic():
        Message.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
        queued = list(Message.objects.filter(idempotency_key__in=[i.idempotency_key for i in items])
                      .values_list("id", "correlation_id"))
        delivery_kick(sender.pk)  # deferred to after COMMIT
    log.info("messages queued", extra={"sender_id": sender.pk, "source": source, "count": len(queued),
                                       **rows_extra("message_ids", queued)})
    return [pk for pk, _ in queued]


def message_queue(*, contact: Contact, template: Any, idempotency_key: str, sender: SenderProfile | None = None,
                  context: dict[str, Any] | None = None, source: str = "", redirect_to: str = "",
                  kind: str | None = None, revision: Any = None) -> Message:
    ids = messages_queue(template=template, sender=sender, source=source, kind=kind, revision=revision,
                         items=[QueueItem(contact.pk, idempotency_key, context or {}, redirect_to)])
    return Message.objects.get(pk=ids[0])


def message_queue_internal(*, contact: Contact, to_email: str, subject: str, text: str, idempotency_key: str,
                           source: str = "", redirect_to: str = "", correlation_id: str = "",
                           sender: SenderProfile | None = None) -> Message:
    """Queue a plain-text email to staff about `contact` (a workflow's notify_sales): the outbox's
    throttling, retries and idempotency (the same key twice is one email), but transactional
    (no consent check) and internal (delivery adds no footer or tracking; only `to_email`'s own
    suppression counts). `redirect_to`: the staging recipient, which then gets it instead."""
    sender = sender or sender_default()
    with transaction.atomic():
        Message.objects.bulk_create([Message(
            contact=contact, sender=sender, kind=MessageKind.TRANSACTIONAL, internal=True,
            idempotency_key=idempotency_key, context={"subject": subject[:300], "text": text}, source=source,
            to_email=suppression_key(to_email), redirect_to=redirect_to, is_test=bool(redirect_to),
            correlation_id=correlation_id or current_correlation_id())], ignore_conflicts=True)
        message = Message.objects.get(idempotency_key=idempotency_key)
        delivery_kick(sender.pk)  # deferred to after COMMIT
    log.info("messages queued", extra={"sender_id": sender.pk, "source": source, "count": 1,
                                       **rows_extra("message_ids", [(message.pk, message.correlation_id)])})
    return message


def message_send_test(*, template: Any, contact: Contact, to_email: str, actor: Any,
                      sender: SenderProfile | None = None) -> Message:
    """Send the template, rendered for `contact`, to `to_email` (an admin's "send test"): its
    current (draft) content, which the message records as a revision."""
    from campaigns.revisions import template_revision_current

    revision = template_revision_current(template=template, actor=actor, source="admin")
    # Transactional: a test goes to the marketer's own address, whatever the contact's consent.
    message = message_queue(contact=contact, template=template, sender=sender, source=TEST_SOURCE,
                            revision=revision, idempotency_key=f"test:{uuid.uuid4()}",
                            redirect_to=normalize_email(to_email), kind=MessageKind.TRANSACTIONAL)
    audit_record(actor=actor, action="template.test_sent", target=("campaigns.emailtemplate", template.pk),
                 data={"message": message.pk, "contact": contact.pk})
    return message


def message_preview(*, template: Any, contact: Contact, sender: SenderProfile | None = None) -> Message:
    """The message as it would be sent to `contact`, rendered in memory from the template's
    current (draft) fields; nothing is saved."""
    sender = sender or sender_default()
    message = Message(pk=0, contact=contact, template=template, sender=sender, kind=template.kind)
    message_render(message, sender)
    return message


RETRYABLE = (MessageStatus.FAILED, MessageStatus.DEFERRED, MessageStatus.BOUNCED)


@dataclass
class RetryResult:
    queued: int = 0
    # (message id, address, suppression reason label): not queued, the address is suppressed
    refused: list[tuple[int, str, str]] = field(default_factory=list)


def messages_retry(*, message_ids: Iterable[int], actor: Any) -> RetryResult:
    """Queue failed, deferred or bounced messages again now (after a fix). Suppressed and sent
    messages stay as they are, and so does a message whose address (the one it goes to: a test
    copy's tester, else the contact's) is on the suppression list: a retry must not mail a
    hard-bounced or complaining address again. Re-renders: the fix may have been in the template."""
    ids = list(message_ids)
    result = RetryResult()
    with transaction.atomic():
        candidates = {m.pk: m for m in Message.objects.filter(pk__in=ids, status__in=RETRYABLE)
                      .select_related("contact").only("id", "kind", "to_email", "redirect_to", "contact__email")}
        addresses = {pk: m.redirect_to or m.to_email or m.contact.email for pk, m in candidates.items()}
        hashes = {pk: email_hash(address) for pk, address in addresses.items()}
        listed = dict(Suppression.objects.filter(email_hash__in=set(hashes.values()))
                      .values_list("email_hash", "reason"))
        for pk in sorted(addresses):
            reason = listed.get(hashes[pk])
            # As at send time: an unsubscribe stops marketing only (a receipt still goes).
            if reason is not None and (reason != SuppressionReason.UNSUBSCRIBED
                                       or candidates[pk].kind == MessageKind.MARKETING):
                result.refused.append((pk, addresses[pk], SuppressionReason(reason).label))
        refused = {pk for pk, _, _ in result.refused}
        retry = Message.objects.filter(pk__in=[pk for pk in addresses if pk not in refused], status__in=RETRYABLE)
        senders = set(retry.values_list("sender_id", flat=True))
        result.queued = retry.update(status=MessageStatus.QUEUED, next_attempt_at=None, reason="", html="",
                                     text="", subject="", links=[], updated_at=timezone.now())
        audit_record(actor=actor, action="messages.retried", target=("campaigns.message", None),
                     data={"count": result.queued, "ids": ids[:100], "refused_suppressed": sorted(refused)[:100]})
        for sender_id in senders:
            delivery_kick(sender_id)
    return result


# --- Suppression --------------------------------------------------------------------------------


def suppression_add(*, email: str, reason: str, detail: str = "", source: str = "") -> bool:
    """Suppress an address (idempotent); returns whether it was new. Erasures keep no address.
    Keyed on the canonical form (contacts/emails.py), whatever spelling the caller has."""
    hashed = email_hash(email)
    stored_email = "" if reason == SuppressionReason.ERASED else suppression_key(email)[:254]
    with transaction.atomic():
        existing = Suppression.objects.select_for_update().filter(email_hash=hashed).first()
        if existing is None:
            Suppression.objects.create(email_hash=hashed, email=stored_email, reason=reason,
                                       detail=detail[:2000], source=source[:100])
            return True
        if reason in (SuppressionReason.ERASED, SuppressionReason.COMPLAINT, SuppressionReason.HARD_BOUNCE) \
                and existing.reason != reason:
            # A stronger reason wins (an erasure also drops the stored address).
            Suppression.objects.filter(pk=existing.pk).update(reason=reason, email=stored_email,
                                                              detail=detail[:2000], source=source[:100])
        return False


def contact_unsubscribe(*, contact: Contact, source: str, message: Message | None = None,
                        ip: str | None = None) -> bool:
    """Withdraw marketing consent (idempotent); records an event for scoring and workflows, and
    the change in the consent history."""
    from consent.services import consent_set

    with transaction.atomic():
        changed = consent_set(contact=contact, status=ConsentStatus.WITHDRAWN, source="unsubscribe",
                              detail=source, actor="the contact", ip=ip,
                              message_id=message.pk if message else None,
                              proof={"message_id": message.pk} if message else None)
        suppression_add(email=contact.email, reason=SuppressionReason.UNSUBSCRIBED, source=source)
        if changed and message is not None:
            message_unsubscribe_count(message)
        props = {"message_id": message.pk} if message else {}
        _tracking_event(contact.pk, "email_unsubscribed", props, key=f"unsubscribe:{contact.pk}")
    return bool(changed)


# --- Tracking (recipients' actions become events) ------------------------------------------------


def _tracking_event(contact_id: int, event_type: str, properties: dict[str, Any], *, key: str) -> None:
    """One event per key (first open, first click of a link, unsubscribe); processed like API events."""
    cid = current_correlation_id()  # the tracking hit's request (or the bounce webhook's)
    Event.objects.bulk_create([Event(contact_id=contact_id, event_type=event_type, properties=properties,
                                     occurred_at=timezone.now(), source=TRACKING_SOURCE, idempotency_key=key,
                                     correlation_id=cid)],
                              ignore_conflicts=True)
    ids = list(Event.objects.filter(source=TRACKING_SOURCE, idempotency_key=key, processed_at__isnull=True)
               .values_list("id", flat=True))
    enqueue_processing(event_ids=ids, correlation_id=cid)


def engagement_record(*, message_id: int, kind: int, link_index: int | None = None,
                      at: dt.datetime | None = None) -> None:
    """Append one open, click, unsubscribe or soft bounce of a message (campaigns/reports.py counts
    them), at most ENGAGEMENT_CAP rows per message and kind: the public endpoints record every hit
    a token's rate limit lets through (all of them when Redis is down), so a bot replaying one
    pixel would add a row a second for ever. The row takes the next free slot; a hit past the cap,
    or racing another for the same slot, is not stored (totals stop at the cap)."""
    taken = MessageEngagement.objects.filter(message_id=message_id, kind=kind).count()
    if taken >= ENGAGEMENT_CAP:
        return
    MessageEngagement.objects.bulk_create(
        [MessageEngagement(message_id=message_id, kind=kind, link_index=link_index, slot=taken + 1,
                           occurred_at=at or timezone.now())],
        ignore_conflicts=True)  # INSERT ... ON CONFLICT DO NOTHING on the unique (message, kind, slot)


def message_unsubscribe_count(message: Any) -> None:
    """The contact withdrew consent or left a topic through this email's link: its report counts it
    (campaigns/reports.py). A complaint is counted from complained_at; a test copy not at all."""
    if not message.is_test:
        engagement_record(message_id=message.pk, kind=EngagementKind.UNSUBSCRIBE)


def _message_props(message: Message) -> dict[str, Any]:
    return {"message_id": message.pk, "template": message.template.key if message.template else "",
            "source": message.source}


def tracking_open(*, message_id: int) -> bool:
    """Record an open: each as an engagement row (up to ENGAGEMENT_CAP), the first also as
    `opened_at` and an `email_opened` event. Unknown ids and test copies are ignored."""
    message = Message.objects.select_related("template").filter(pk=message_id).first()
    if message is None or message.is_test:
        return False
    with transaction.atomic():
        now = timezone.now()
        engagement_record(message_id=message.pk, kind=EngagementKind.OPEN, at=now)
        first = Message.objects.filter(pk=message.pk, opened_at__isnull=True).update(opened_at=now)
        if first:
            _tracking_event(message.contact_id, "email_opened", _message_props(message), key=f"open:{message.pk}")
    return bool(first)


def tracking_click(*, message_id: int, index: int) -> str | None:
    """The URL the click leads to (only a link stored with that message), or None."""
    message = Message.objects.select_related("template").filter(pk=message_id).first()
    if message is None or not 0 <= index < len(message.links or []):
        return None
    url = str(message.links[index])
    if message.is_test:
        return url
    with transaction.atomic():
        now = timezone.now()
        engagement_record(message_id=message.pk, kind=EngagementKind.CLICK, link_index=index, at=now)
        Message.objects.filter(pk=message.pk, clicked_at__isnull=True).update(clicked_at=now)
        # A click implies the email was opened (images are often blocked).
        if Message.objects.filter(pk=message.pk, opened_at__isnull=True).update(opened_at=now):
            _tracking_event(message.contact_id, "email_opened", _message_props(message), key=f"open:{message.pk}")
        _tracking_event(message.contact_id, "email_clicked", {**_message_props(message), "url": url},
                        key=f"click:{message.pk}:{index}")
    return url


# --- Bounces and complaints ----------------------------------------------------------------------


@dataclass
class BounceReport:
    email: str
    kind: str  # hard | soft | complaint
    detail: str = ""
    provider_message_id: str = ""  # our Message-ID header, as the report quotes it
    relay_message_id: str = ""  # the id the provider answered the send with (SES: mail.messageId)
    leadflow_id: int | None = None  # our X-Leadflow-Message header


@dataclass
class BounceResult:
    recorded: int = 0
    suppressed: int = 0
    unknown: int = 0


def bounces_record(*, reports: Sequence[BounceReport], source: str) -> BounceResult:
    """Hard bounces and complaints suppress the address and mark the message; soft bounces are
    events only (the provider retries). Each becomes an event on the contact when we know them.

    A report about a test copy (an admin's "send test", a staging redirect) is about the address
    that copy went to, never about the contact it was rendered for: that address is suppressed
    (it bounced or complained), the message is marked, and the contact is left alone."""
    result = BounceResult()
    with transaction.atomic():
        for report in reports:
            email = suppression_key(report.email)  # what we sent to and suppress: the canonical form
            message = message_for_report(email=email, relay_message_id=report.relay_message_id,
                                         provider_message_id=report.provider_message_id,
                                         leadflow_id=report.leadflow_id)
            # An internal copy (a notify_sales email) went to staff: it is not about the contact either.
            test_copy = message is not None and (message.is_test or message.internal)
            contact_id = None if test_copy else message.contact_id if message else \
                Contact.objects.filter(email=email).values_list("id", flat=True).first()
            if report.kind in ("hard", "complaint"):
                reason = SuppressionReason.HARD_BOUNCE if report.kind == "hard" else SuppressionReason.COMPLAINT
                result.suppressed += suppression_add(email=email, reason=reason, detail=report.detail, source=source)
                if message is not None and report.kind == "hard":
                    Message.objects.filter(pk=message.pk).update(
                        status=MessageStatus.BOUNCED, reason="hard_bounce", last_error=report.detail[:2000],
                        bounced_at=Coalesce("bounced_at", Value(timezone.now())), updated_at=timezone.now())
                if message is not None and report.kind == "complaint":
                    # The sender's complaint rate (core/ops.py sender_rates): the first report counts.
                    Message.objects.filter(pk=message.pk, complained_at__isnull=True).update(
                        complained_at=timezone.now())
                if report.kind == "complaint" and contact_id:
                    from consent.services import consent_set

                    complainer = Contact.objects.get(pk=contact_id)
                    consent_set(contact=complainer, status=ConsentStatus.WITHDRAWN, source="complaint",
                                detail=f"complaint via {source}", actor=source,
                                message_id=message.pk if message else None,
                                proof={"report": report.detail[:300], "relay_message_id": report.relay_message_id})
            if report.kind == "soft" and message is not None and not test_copy:
                # Reports count soft-bounced messages; a hard bounce is the message's bounced_at.
                engagement_record(message_id=message.pk, kind=EngagementKind.SOFT_BOUNCE)
            if test_copy:
                result.recorded += 1  # recorded on the message and the suppression list, not on a contact
                continue
            if contact_id is None:
                result.unknown += 1
                continue
            event_type = "email_complained" if report.kind == "complaint" else "email_bounced"
            report_id = (report.relay_message_id or report.provider_message_id)[:80]
            key = f"{report.kind}:{message.pk if message else email_hash(email)[:16]}:{report_id}"
            _tracking_event(contact_id, event_type,
                            {"kind": report.kind, "detail": report.detail[:500],
                             "message_id": message.pk if message else None}, key=key)
            result.recorded += 1
    return result


def message_for_report(*, email: str, relay_message_id: str = "", provider_message_id: str = "",
                       leadflow_id: int | None = None) -> Message | None:
    """The message a provider's report (a bounce, complaint or delivery; later a DSN) is about,
    `email` being the canonical address it names. Tried in order: the id the provider answered the
    send with (SES's mail.messageId), our Message-ID header, our X-Leadflow-Message header (an id
    match must also be to that address, so a report quoting another message's id cannot mark it),
    then the latest message sent to the address."""
    relay = relay_message_id.strip().strip("<>")
    if relay:
        found = _to_address(Message.objects.filter(relay_message_id=relay), email)
        if found is not None:
            return found
    pid = provider_message_id.strip()
    if pid:
        bracketed = pid if pid.startswith("<") else f"<{pid}>"
        found = _to_address(Message.objects.filter(provider_message_id__in={pid, bracketed}), email)
        if found is not None:
            return found
    if leadflow_id is not None:
        found = _to_address(Message.objects.filter(pk=leadflow_id), email)
        if found is not None:
            return found
    return Message.objects.filter(to_email=email).order_by("-id").first()


def _to_address(query: Any, email: str) -> Message | None:
    message: Message | None = query.order_by("-id").first()
    if message is None or (message.to_email and message.to_email != email):
        return None
    return message


@dataclass
class DeliveryReport:
    email: str
    relay_message_id: str = ""
    provider_message_id: str = ""
    leadflow_id: int | None = None


@dataclass
class DeliveryResult:
    delivered: int = 0
    unknown: int = 0


def deliveries_record(*, reports: Sequence[DeliveryReport]) -> DeliveryResult:
    """The provider handed these messages to the recipient's server (SES Delivery): set
    `delivered_at` once. Nothing else changes (a message is `sent` either way)."""
    result = DeliveryResult()
    now = timezone.now()
    for report in reports:
        message = message_for_report(email=suppression_key(report.email), relay_message_id=report.relay_message_id,
                                     provider_message_id=report.provider_message_id, leadflow_id=report.leadflow_id)
        if message is None:
            result.unknown += 1
            continue
        Message.objects.filter(pk=message.pk, delivered_at__isnull=True).update(delivered_at=now, updated_at=now)
        result.delivered += 1
    return result


def messages_stats(*, since: dt.datetime) -> dict[int, dict[str, int]]:
    """Per sender id: messages sent since `since` (the admin's send rates)."""
    from django.db.models import Count

    rows = (Message.objects.filter(status=MessageStatus.SENT, sent_at__gte=since)
            .values_list("sender_id").annotate(n=Count("id")).values_list("sender_id", "n"))
    return {sender_id: {"sent": n} for sender_id, n in rows}
