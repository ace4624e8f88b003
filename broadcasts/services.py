"""Writes of broadcasts: save (pin revisions), test, approve, send/schedule, queue, pause, resume,
cancel, and the A/B decision. docs/broadcasts.md tells the whole story.

Sending goes through the outbox unchanged: each recipient's message is a campaigns.Message with
the idempotency key broadcast:<id>:<contact id> (unique), so suppression, consent and topics,
frequency caps, quiet hours, warm-up and throttling apply as to every email, and a contact gets
the broadcast at most once whatever is retried. Recipients are written with one INSERT ... SELECT
when the broadcast starts; their messages with one INSERT ... SELECT per chunk, each chunk in a
transaction that holds the broadcast's row lock and checks it is still sending, so a pause or a
cancel never races a chunk. Redis carries only the "go on" signal: broadcasts_tick resumes a
half-queued broadcast from the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import time
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Max, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from redis.exceptions import RedisError

from broadcasts.models import (
    EDITABLE_STATUSES,
    AbMetric,
    Broadcast,
    BroadcastRecipient,
    BroadcastStatus,
    BroadcastVariant,
    ScheduleKind,
)
from broadcasts.timezones import country_zone
from campaigns.delivery import TEST_SOURCE, delivery_kick
from campaigns.models import (
    PENDING_STATUSES,
    EmailTemplate,
    EmailTemplateRevision,
    Message,
    MessageKind,
    MessageStatus,
    template_content_hash,
)
from campaigns.revisions import template_revision_current
from campaigns.services import QueueItem, messages_queue
from campaigns.utm import UtmInvalid, utm_clean
from contacts.models import Contact, SegmentMembership
from core.audit import audit_record
from core.queues import get_connection as redis_connection
from core.queues import get_queue

log = logging.getLogger(__name__)

QUEUE_JOB = "broadcasts.tasks.broadcast_queue_job"
QUEUE_CHUNK = 5000  # recipients whose messages one INSERT ... SELECT writes (one transaction)
QUEUE_JOB_SECONDS = 20  # a queue job re-enqueues itself after this long (RQ timeouts, fairness)
TEST_AUDIENCE_MAX = 50  # test contacts a test send goes to, per variant
# Held messages of a paused broadcast: deferred to a time delivery never reaches (the claim only
# takes messages whose next_attempt_at has come), with this reason so resume finds exactly them.
HOLD_REASON = "broadcast_paused"
HOLD_UNTIL = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
CANCEL_REASON = "broadcast_cancelled"
_KICK_TTL = 60


class BroadcastError(ValidationError):
    """Bad input or a wrong state, with a message the marketer (or the API client) can act on."""


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


# --- Content and audience -------------------------------------------------------------------------


def revision_for(*, template: EmailTemplate, subject: str, actor: Any) -> EmailTemplateRevision:
    """The revision of the template's current content, with `subject` instead of its own when set
    (an A/B test on the subject): a revision like any other, deduplicated by content hash."""
    if not subject or subject == template.subject:
        return template_revision_current(template=template, actor=actor, source="broadcast")
    digest = template_content_hash(kind=template.kind, subject=subject, html=template.html, text=template.text,
                                   topic_id=template.topic_id)
    found = EmailTemplateRevision.objects.filter(template=template, content_hash=digest).first()
    if found is not None:
        return found
    with transaction.atomic():
        EmailTemplate.objects.select_for_update().filter(pk=template.pk).first()
        number = (template.revisions.aggregate(n=Max("number"))["n"] or 0) + 1
        try:
            with transaction.atomic():
                return EmailTemplateRevision.objects.create(
                    template=template, number=number, kind=template.kind, subject=subject, html=template.html,
                    text=template.text, topic_id=template.topic_id, content_hash=digest, created_by=_user(actor),
                    source="broadcast")
        except IntegrityError:  # SQLite: a concurrent writer made it first
            return EmailTemplateRevision.objects.get(template=template, content_hash=digest)


def audience_queryset(broadcast: Broadcast) -> QuerySet[Contact]:
    """Contacts in any of its segments or lists, minus any excluded one's, minus the test audience
    (test contacts get test sends, as staging workflow versions run only for them)."""
    seg = list(broadcast.segments.values_list("pk", flat=True))
    lists = list(broadcast.lists.values_list("pk", flat=True))
    through = Contact.lists.through
    included = Q(pk__in=SegmentMembership.objects.filter(segment_id__in=seg).values("contact_id")) | Q(
        pk__in=through.objects.filter(contactlist_id__in=lists).values("contact_id"))
    contacts = Contact.objects.filter(included, is_test=False)
    excluded_seg = list(broadcast.exclude_segments.values_list("pk", flat=True))
    excluded_lists = list(broadcast.exclude_lists.values_list("pk", flat=True))
    if excluded_seg:
        contacts = contacts.exclude(pk__in=SegmentMembership.objects.filter(segment_id__in=excluded_seg)
                                    .values("contact_id"))
    if excluded_lists:
        contacts = contacts.exclude(pk__in=through.objects.filter(contactlist_id__in=excluded_lists)
                                    .values("contact_id"))
    return contacts.order_by()


def audience_problem(broadcast: Broadcast, count: int | None = None) -> str:
    """Why the audience cannot be sent to ("" when it can)."""
    if not broadcast.segments.exists() and not broadcast.lists.exists():
        return "The audience is empty: choose at least one segment or list."
    n = audience_queryset(broadcast).count() if count is None else count
    if n == 0:
        names = ", ".join([*(s.name for s in broadcast.segments.all()), *(str(x) for x in broadcast.lists.all())])
        return (f"The audience is empty: {names} have no contacts left after the exclusions "
                "(test contacts are never in a broadcast's audience).")
    return ""


def schedule_definition(broadcast: Broadcast) -> dict[str, Any]:
    """The schedule as approved (review finding 9): its mode, and the time and the window when the
    mode uses them (a send_at left over on a 'now' broadcast changes nothing, so it voids nothing).
    Migration 0003 holds a frozen copy of this for broadcasts approved before the schedule counted."""
    mode = broadcast.schedule
    window = None
    if mode == ScheduleKind.LOCAL and broadcast.window_start and broadcast.window_end:
        window = [broadcast.window_start.isoformat(), broadcast.window_end.isoformat()]
    return {"mode": mode, "window": window,
            "send_at": broadcast.send_at.astimezone(dt.UTC).isoformat()
            if mode != ScheduleKind.NOW and broadcast.send_at else None}


def broadcast_definition(broadcast: Broadcast) -> dict[str, Any]:
    """What an approval approves: the pinned revisions, the audience's definition, the sender, the
    schedule, the UTM parameters and the A/B settings. Its hash is the broadcast's fingerprint."""
    variants = list(broadcast.variants.select_related("revision", "template").order_by("position"))

    def segments(rel: Any) -> list[dict[str, Any]]:
        return [{"id": s.pk, "name": s.name, "definition": s.definition} for s in rel.order_by("pk")]

    return {
        "variants": [{"label": v.label, "template": v.template.key, "revision": v.revision_id,
                      "number": v.revision.number if v.revision else None} for v in variants],
        "segments": segments(broadcast.segments), "lists": sorted(broadcast.lists.values_list("pk", flat=True)),
        "exclude_segments": segments(broadcast.exclude_segments),
        "exclude_lists": sorted(broadcast.exclude_lists.values_list("pk", flat=True)),
        "sender": broadcast.sender_id,
        "schedule": schedule_definition(broadcast),
        "utm": broadcast.utm or {},
        "ab": ({"test_share": broadcast.test_share, "metric": broadcast.ab_metric,
                "wait_minutes": broadcast.ab_wait_minutes, "min_sent": broadcast.ab_min_sent}
               if len(variants) > 1 else None),
    }


def fingerprint_of(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()


def schedule_problems(broadcast: Broadcast, now: dt.datetime | None = None) -> dict[str, str]:
    """Field -> what is wrong with the schedule (a time in the past among them)."""
    now = now or timezone.now()
    errors: dict[str, str] = {}
    if broadcast.schedule == ScheduleKind.AT:
        if broadcast.send_at is None:
            errors["send_at"] = "Choose when to send it (or schedule 'now')."
        elif broadcast.send_at <= now:
            errors["send_at"] = (f"{broadcast.send_at:%Y-%m-%d %H:%M %Z} is in the past "
                                 f"(now: {now:%Y-%m-%d %H:%M %Z}): "
                                 "choose a later time or send now.")
    elif broadcast.schedule == ScheduleKind.LOCAL:
        if broadcast.send_at is None:
            errors["send_at"] = "Choose the day to send it in each contact's time zone."
        if broadcast.window_start is None or broadcast.window_end is None:
            errors["window_end"] = "Set both ends of the local window, e.g. 09:00 to 11:00."
        elif broadcast.window_start >= broadcast.window_end:
            errors["window_end"] = "The window must end after it starts (same day, local time)."
        elif broadcast.send_at is not None:
            zone = zoneinfo.ZoneInfo(broadcast.sender.time_zone)
            day = broadcast.send_at.astimezone(zone).date()
            if day < now.astimezone(zone).date():
                errors["send_at"] = f"{day:%Y-%m-%d} is in the past: choose today or a later day."
    return errors


def _pin(broadcast: Broadcast, actor: Any) -> None:
    for variant in broadcast.variants.select_related("template"):
        revision = revision_for(template=variant.template, subject=variant.subject, actor=actor)
        if variant.revision_id != revision.pk:
            BroadcastVariant.objects.filter(pk=variant.pk).update(revision=revision)


def _variants_problem(broadcast: Broadcast) -> str:
    n = broadcast.variants.count()
    if n == 0:
        return "Add a template (variant A)."
    if n > 4:
        return "An A/B test has at most four variants."
    return _kind_problem(broadcast)


def _kind_problem(broadcast: Broadcast) -> str:
    """A broadcast is marketing (review finding 2): delivery applies unsubscribes, consent, topics,
    frequency caps and quiet hours to marketing messages only, so a transactional template would
    reach contacts who opted out."""
    for variant in broadcast.variants.select_related("template", "revision").order_by("position"):
        kind = variant.revision.kind if variant.revision else variant.template.kind
        if kind != MessageKind.MARKETING:
            return (f"Variant {variant.label}: template {variant.template.key!r} is {kind}; a broadcast sends "
                    "marketing email only (unsubscribes, consent, topics and caps apply): choose a marketing "
                    "template.")
    return ""


@transaction.atomic
def broadcast_save(*, broadcast: Broadcast, actor: Any) -> Broadcast:
    """After the admin saved the broadcast and its variants: pin each variant's revision (the
    template's current content), recompute the fingerprint, and void an approval it no longer matches."""
    if broadcast.status not in EDITABLE_STATUSES:
        raise BroadcastError(f"{broadcast.key} is {broadcast.get_status_display().lower()}: it can no longer be "
                             "edited (cancel it and make a new one)")
    _pin(broadcast, actor)
    if problem := _kind_problem(broadcast):
        raise BroadcastError({"variants": problem})
    try:
        utm_clean(broadcast.utm, where="utm")
    except UtmInvalid as exc:
        raise BroadcastError({"utm": str(exc)}) from exc
    fingerprint = fingerprint_of(broadcast_definition(broadcast))
    updates: dict[str, Any] = {"fingerprint": fingerprint}
    if broadcast.status == BroadcastStatus.APPROVED and fingerprint != broadcast.approved_fingerprint:
        updates.update(status=BroadcastStatus.DRAFT, approved_fingerprint="", approved_at=None, approved_by=None,
                       status_message="Changed after its approval: send a test and approve it again.")
        audit_record(actor=actor, action="broadcast.approval_voided", target=broadcast,
                     data={"fingerprint": fingerprint})
    Broadcast.objects.filter(pk=broadcast.pk).update(**updates)
    for name, value in updates.items():
        setattr(broadcast, name, value)
    return broadcast


# --- Test and approval ----------------------------------------------------------------------------


def staging_recipient(broadcast: Broadcast) -> str:
    """Where test sends go instead of the test contacts' own addresses (as staging workflow versions)."""
    return str(broadcast.sender.staging_recipient or getattr(settings, "WORKFLOW_STAGING_RECIPIENT", "") or "")


def broadcast_send_test(*, broadcast: Broadcast, actor: Any) -> list[int]:
    """Send every variant, as pinned now, to the test audience (contacts marked as test; to the
    sender's staging recipient when it has one). Returns the message ids. Approval needs a test of
    the same fingerprint."""
    if problem := _variants_problem(broadcast):
        raise BroadcastError(problem)
    broadcast_save(broadcast=broadcast, actor=actor)
    testers = list(Contact.objects.filter(is_test=True).order_by("pk").values_list("pk", flat=True)[:TEST_AUDIENCE_MAX])
    if not testers:
        raise BroadcastError("There is no test audience: mark one or more contacts as test contacts "
                             "(Contacts > 'Is test'), as for staging workflow versions.")
    redirect = staging_recipient(broadcast)
    if not redirect:
        # As for staging workflow versions: a test never falls back to the test contacts' own addresses.
        raise BroadcastError(f"Sender {broadcast.sender} has no staging recipient (and WORKFLOW_STAGING_RECIPIENT "
                             "is empty): set one on the sender profile to receive test sends.")
    ids: list[int] = []
    test_key = f"broadcast-test:{broadcast.pk}:{broadcast.fingerprint[:16]}"  # one test per version
    with transaction.atomic():
        for variant in broadcast.variants.select_related("template", "revision"):
            # Transactional: it goes to the team's own test addresses, whatever their consent says.
            ids += messages_queue(
                template=variant.template, revision=variant.revision, sender=broadcast.sender,
                kind=MessageKind.TRANSACTIONAL, source=TEST_SOURCE, is_test=True, utm=broadcast.utm or None,
                items=[QueueItem(pk, f"{test_key}:{variant.position}:{pk}",
                                 {"broadcast": broadcast.key, "variant": variant.label}, redirect)
                       for pk in testers])
        Broadcast.objects.filter(pk=broadcast.pk).update(test_fingerprint=broadcast.fingerprint,
                                                         test_sent_at=timezone.now())
        audit_record(actor=actor, action="broadcast.test_sent", target=broadcast,
                     data={"messages": ids[:100], "redirect_to": redirect, "fingerprint": broadcast.fingerprint})
    broadcast.test_fingerprint = broadcast.fingerprint
    return ids


def approval_threshold() -> int:
    return int(settings.BROADCAST_APPROVAL_THRESHOLD)


@transaction.atomic
def broadcast_approve(*, broadcast: Broadcast, actor: Any) -> Broadcast:
    """Approve what the last test sent. Above BROADCAST_APPROVAL_THRESHOLD contacts only an
    Approver (broadcasts.approve_broadcast) may; below it anyone who may change broadcasts."""
    if not getattr(actor, "has_perm", None) or not actor.has_perm("broadcasts.change_broadcast"):
        raise PermissionDenied("You may not approve broadcasts.")
    locked = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
    if locked.status != BroadcastStatus.DRAFT:
        raise BroadcastError(f"{locked.key} is {locked.get_status_display().lower()}: only a draft is approved.")
    if problem := _variants_problem(locked):
        raise BroadcastError(problem)
    definition = broadcast_definition(locked)
    fingerprint = fingerprint_of(definition)
    if fingerprint != locked.test_fingerprint:
        raise BroadcastError("Send a test of this version first: its content, audience or sender changed since "
                             "the last test send." if locked.test_fingerprint else
                             "Send a test to the test audience first.")
    count = audience_queryset(locked).count()
    if problem := audience_problem(locked, count):
        raise BroadcastError(problem)
    if count > approval_threshold() and not actor.has_perm("broadcasts.approve_broadcast"):
        raise PermissionDenied(f"{count} contacts is more than {approval_threshold()} "
                               "(BROADCAST_APPROVAL_THRESHOLD): an Approver must approve this broadcast.")
    now = timezone.now()
    Broadcast.objects.filter(pk=locked.pk).update(
        status=BroadcastStatus.APPROVED, fingerprint=fingerprint, approved_fingerprint=fingerprint,
        approved_definition=definition, approved_count=count, approved_by=_user(actor), approved_at=now,
        status_message="")
    audit_record(actor=actor, action="broadcast.approved", target=locked,
                 data={"fingerprint": fingerprint, "contacts": count, "definition": definition})
    broadcast.refresh_from_db()
    return broadcast


# --- Sending --------------------------------------------------------------------------------------


CHANGED_SINCE_APPROVAL = ("What it would send changed since its approval (a segment, list, template revision, the "
                          "sender, the schedule or the UTM parameters): test and approve it again.")


def broadcast_send(*, broadcast: Broadcast, actor: Any, now: dt.datetime | None = None) -> Broadcast:
    """Send an approved broadcast as scheduled: now (start), at a time (scheduled; broadcasts_tick
    starts it), or in each contact's time zone (started now: each message waits for its window).
    The admin's "Send", the API and `manage.py broadcast_send` all come here."""
    now = now or timezone.now()
    broadcast.refresh_from_db()
    if broadcast.status != BroadcastStatus.APPROVED:
        hint = {BroadcastStatus.DRAFT: "it is a draft: send a test and approve it first",
                BroadcastStatus.PAUSED: "it is paused: resume it"}.get(BroadcastStatus(broadcast.status),
                                                                        f"it is already {broadcast.status}")
        raise BroadcastError(f"{broadcast.key} cannot be sent: {hint}.", code="state")
    if errors := schedule_problems(broadcast, now):
        raise BroadcastError(errors)
    if fingerprint_of(broadcast_definition(broadcast)) != broadcast.approved_fingerprint:
        raise BroadcastError(CHANGED_SINCE_APPROVAL, code="state")  # not scheduled to be refused later
    if broadcast.schedule == ScheduleKind.AT:
        with transaction.atomic():
            if not Broadcast.objects.filter(pk=broadcast.pk, status=BroadcastStatus.APPROVED).update(
                    status=BroadcastStatus.SCHEDULED, status_message=""):
                raise BroadcastError(f"{broadcast.key} changed meanwhile: reload it.", code="state")
            audit_record(actor=actor, action="broadcast.scheduled", target=broadcast,
                         data={"send_at": broadcast.send_at.isoformat() if broadcast.send_at else None})
        broadcast.refresh_from_db()
        return broadcast
    return broadcast_start(broadcast=broadcast, actor=actor, now=now)


def broadcast_start(*, broadcast: Broadcast, actor: Any, now: dt.datetime | None = None) -> Broadcast:
    """Approved or scheduled -> sending: write the recipients (one INSERT ... SELECT), then queue
    their messages in a job after COMMIT. Refused, with the reason, when anything approved changed
    (a segment's definition, a list, the sender) or the audience is empty."""
    now = now or timezone.now()
    refused = ""
    with transaction.atomic():
        locked = (Broadcast.objects.select_for_update(of=("self",)).select_related("sender", "approved_by")
                  .get(pk=broadcast.pk))
        if locked.status not in (BroadcastStatus.APPROVED, BroadcastStatus.SCHEDULED):
            raise BroadcastError(f"{locked.key} is {locked.status}: it cannot start.", code="state")
        if fingerprint_of(broadcast_definition(locked)) != locked.approved_fingerprint:
            raise BroadcastError(CHANGED_SINCE_APPROVAL, code="state")
        before = transaction.savepoint()
        written = _recipients_write(locked, now)
        if written == 0:
            raise BroadcastError(audience_problem(locked, 0) or "The audience is empty.", code="empty")
        if refused := _growth_problem(locked, written):
            # The recipients go; the approval is voided in this transaction (committed), so the
            # Approve button is offered again and an Approver can approve it as it is now.
            transaction.savepoint_rollback(before)
            _approval_void(locked, actor, refused, data={"approved_count": locked.approved_count,
                                                         "audience": written})
        else:
            _started(locked, actor, written, now)
    if refused:
        raise BroadcastError(refused, code="state")
    broadcast.refresh_from_db()
    return broadcast


def _growth_problem(broadcast: Broadcast, written: int) -> str:
    """Review finding 1: the threshold is checked at approval, but a list can grow after it. Over
    the threshold now, an approval by someone without the Approver permission does not cover it.
    An Approver's approval covers growth (no tolerance): the permission has no upper size, and
    lists legitimately grow between approval and a scheduled send (signups); the audit log and
    the approval line keep both counts."""
    threshold = approval_threshold()
    approver = broadcast.approved_by
    if written <= threshold or (approver is not None and approver.has_perm("broadcasts.approve_broadcast")):
        return ""
    return (f"The audience grew from {broadcast.approved_count} to {written} contacts since its approval, more "
            f"than {threshold} (BROADCAST_APPROVAL_THRESHOLD): an Approver must approve it.")


def _approval_void(broadcast: Broadcast, actor: Any, message: str, data: dict[str, Any]) -> None:
    Broadcast.objects.filter(pk=broadcast.pk).update(
        status=BroadcastStatus.DRAFT, approved_fingerprint="", approved_at=None, approved_by=None,
        status_message=message)
    audit_record(actor=actor, action="broadcast.approval_voided", target=broadcast, data={**data, "reason": message})


def _started(locked: Broadcast, actor: Any, written: int, now: dt.datetime) -> None:
    """Approved or scheduled -> sending, the queue job kicked after COMMIT."""
    ab = locked.variants.count() > 1
    Broadcast.objects.filter(pk=locked.pk).update(
        status=BroadcastStatus.SENDING, started_at=now, recipients_total=written, status_message="",
        ab_decide_at=now + dt.timedelta(minutes=locked.ab_wait_minutes) if ab else None)
    audit_record(actor=actor, action="broadcast.started", target=locked,
                 data={"recipients": written, "approved_count": locked.approved_count,
                       "schedule": locked.schedule, "ab": ab})
    broadcast_queue_kick(locked.pk)  # after COMMIT


_HASH = "((r_contact_id * 2654435761) %% 1000)"  # a contact's fixed pseudo-random draw, 0..999 (%% escaped)


def _recipients_write(broadcast: Broadcast, now: dt.datetime) -> int:
    """INSERT ... SELECT the audience into BroadcastRecipient. A/B: test_share percent of the
    contacts (by a fixed draw on their id) get a variant each, the rest none yet (the winner's)."""
    n_variants = broadcast.variants.count()
    audience = audience_queryset(broadcast).annotate(audience_id=F("pk")).values("audience_id")
    select_sql, params = audience.query.sql_with_params()
    if n_variants > 1:
        draw = _HASH.replace("r_contact_id", "a.audience_id")
        variant = f"CASE WHEN {draw} < %s THEN {draw} %% %s ELSE NULL END"
        variant_params: list[Any] = [broadcast.test_share * 10, n_variants]
    else:
        variant, variant_params = "0", []
    table = BroadcastRecipient._meta.db_table
    sql = (f"INSERT INTO {table} (broadcast_id, contact_id, variant, send_at) "  # noqa: S608  names from models
           f"SELECT %s, a.audience_id, {variant}, NULL FROM ({select_sql}) a WHERE true "
           f"ON CONFLICT (broadcast_id, contact_id) DO NOTHING")
    with connection.cursor() as cursor:
        cursor.execute(sql, [broadcast.pk, *variant_params, *params])
        if connection.vendor == "postgresql":
            # Statistics for the queue's chunk query: planned from an empty table's, it scanned all
            # the recipients for every chunk (autovacuum analyses only later).
            cursor.execute(f"ANALYZE {table}")
    written = BroadcastRecipient.objects.filter(broadcast_id=broadcast.pk).count()
    if broadcast.schedule == ScheduleKind.LOCAL and written:
        _local_times_write(broadcast, now)
    return written


def local_send_time(broadcast: Broadcast, zone: zoneinfo.ZoneInfo, now: dt.datetime) -> dt.datetime | None:
    """When a contact in `zone` gets it: the window's start on the broadcast's day, local time;
    None (at once) while inside the window; the next day's window when it is over there already."""
    assert broadcast.send_at
    assert broadcast.window_start
    assert broadcast.window_end
    day = broadcast.send_at.astimezone(zoneinfo.ZoneInfo(broadcast.sender.time_zone)).date()
    start = dt.datetime.combine(day, broadcast.window_start, tzinfo=zone)
    end = dt.datetime.combine(day, broadcast.window_end, tzinfo=zone)
    while end <= now:
        start, end = start + dt.timedelta(days=1), end + dt.timedelta(days=1)
    return None if start <= now else start.astimezone(dt.UTC)


def _local_times_write(broadcast: Broadcast, now: dt.datetime,
                       recipients: QuerySet[BroadcastRecipient] | None = None) -> None:
    """One UPDATE per country among the recipients (there are at most ~250). `recipients`: only
    these, recomputed from `now` (review finding 5: the A/B remainder once decided, held messages
    on resume), so a time computed earlier and passed since is never used outside the window."""
    fresh = recipients is None
    if recipients is None:
        recipients = BroadcastRecipient.objects.filter(broadcast_id=broadcast.pk)
    countries = set(Contact.objects.filter(pk__in=recipients.values("contact_id")).values_list("country", flat=True)
                    .distinct())
    for country in countries:
        when = local_send_time(broadcast, country_zone(country, broadcast.sender.time_zone), now)
        if when is not None or not fresh:  # fresh rows are NULL already: "at once" needs no write
            recipients.filter(contact_id__in=Contact.objects.filter(country=country).values("pk")).update(send_at=when)


def _kick_key(broadcast_id: int) -> str:
    return f"leadflow:broadcast:queue:{broadcast_id}"


def broadcast_queue_kick(broadcast_id: int) -> None:
    """Enqueue the queue job after COMMIT, once at a time (a Redis key with a TTL; losing it only
    delays: broadcasts_tick kicks again)."""
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: broadcast_queue_kick(broadcast_id))
        return
    try:
        if redis_connection().set(_kick_key(broadcast_id), "1", nx=True, ex=_KICK_TTL):
            get_queue("default").enqueue(QUEUE_JOB, broadcast_id)
    except RedisError:
        log.warning("broadcast %s: Redis unavailable, broadcasts_tick resumes it", broadcast_id, exc_info=True)


def _release_kick(broadcast_id: int) -> None:
    try:
        redis_connection().delete(_kick_key(broadcast_id))
    except RedisError:
        log.warning("broadcast %s: could not release its kick", broadcast_id, exc_info=True)


def broadcast_queue(*, broadcast_id: int, max_seconds: float = QUEUE_JOB_SECONDS, chunk: int = QUEUE_CHUNK) -> int:
    """Write the outbox messages of recipients that have none yet, chunk after chunk, for up to
    `max_seconds`; re-kick when work remains. Returns the messages written. Safe to run twice at
    once: each chunk holds the broadcast's row lock, and the messages' keys are unique."""
    written, after = 0, 0
    try:
        until = time.monotonic() + max_seconds
        while time.monotonic() < until:
            n, after = _queue_chunk(broadcast_id, chunk, after)
            if n == 0:
                break
            written += n
    finally:
        _release_kick(broadcast_id)
    # Released first, checked second: time ran out with recipients left, so the next job goes on.
    if broadcast_pending(broadcast_id).exists() and Broadcast.objects.filter(
            pk=broadcast_id, status=BroadcastStatus.SENDING).exists():
        broadcast_queue_kick(broadcast_id)
    return written


def broadcast_pending(broadcast_id: int) -> QuerySet[BroadcastRecipient]:
    """Recipients whose message is still to be written (not those waiting for an A/B winner)."""
    return BroadcastRecipient.objects.filter(broadcast_id=broadcast_id, message__isnull=True, variant__isnull=False)


def queue_chunk(*, broadcast_id: int, size: int = QUEUE_CHUNK) -> int:
    """One chunk: INSERT ... SELECT its messages, link them to their recipients, kick delivery.
    Marks the broadcast queued when no recipient is left (and any A/B test is decided)."""
    return _queue_chunk(broadcast_id, size, 0)[0]


def _queue_chunk(broadcast_id: int, size: int, after: int) -> tuple[int, int]:
    """(recipients queued, the last one's id). `after`: the previous chunk's last id within one job,
    so the pending index is entered past the entries of rows just linked (dead until vacuumed)."""
    with transaction.atomic():
        broadcast = (Broadcast.objects.select_for_update(of=("self",)).select_related("sender")
                     .filter(pk=broadcast_id, status=BroadcastStatus.SENDING).first())
        if broadcast is None:
            return 0, after  # paused, cancelled or done: nothing more is queued
        ids = list(broadcast_pending(broadcast_id).filter(id__gt=after).order_by("id")
                   .values_list("id", flat=True)[:size])
        if not ids and after:  # an earlier recipient may have been left (a concurrent job): look again
            ids = list(broadcast_pending(broadcast_id).order_by("id").values_list("id", flat=True)[:size])
        if not ids:
            _finish_if_done(broadcast)
            return 0, after
        _messages_insert(broadcast, ids[0], ids[-1])
        _messages_link(broadcast, ids[0], ids[-1])
        delivery_kick(broadcast.sender_id)  # after COMMIT
        if len(ids) < size:
            _finish_if_done(broadcast)
    return len(ids), ids[-1]


def _finish_if_done(broadcast: Broadcast) -> None:
    waiting = BroadcastRecipient.objects.filter(broadcast_id=broadcast.pk, message__isnull=True).exists()
    if not waiting:
        Broadcast.objects.filter(pk=broadcast.pk, status=BroadcastStatus.SENDING).update(
            status=BroadcastStatus.QUEUED, queued_at=timezone.now())


def _insert_columns(broadcast: Broadcast, now: dt.datetime) -> tuple[list[str], list[str], list[Any]]:
    """Message columns, their SELECT expressions and parameters: the recipient's contact, the
    variant's template and revision, the broadcast's sender and key; every other column its
    model default (so a column added to Message later still gets a value)."""
    explicit: dict[str, tuple[str, list[Any]]] = {
        "contact": ("r.contact_id", []),
        "template": ("v.template_id", []),
        "revision": ("v.revision_id", []),
        "sender": ("%s", [broadcast.sender_id]),
        # Marketing whatever the revision says (review finding 2): unsubscribes, consent, topics and
        # caps apply. broadcast_save refuses transactional templates; this also covers older rows.
        "kind": ("%s", [MessageKind.MARKETING.value]),
        "idempotency_key": ("%s || CAST(r.contact_id AS TEXT)", [broadcast.idempotency_prefix()]),
        "source": ("%s", [broadcast.source]),
        # One cause for the whole broadcast: delivery's fair order lets a workflow's welcome email
        # go between its batches instead of after 100,000 of them (campaigns/delivery.py fair_order).
        "correlation_id": ("%s", [broadcast.source]),
        "status": ("%s", [MessageStatus.QUEUED.value]),
        "next_attempt_at": ("r.send_at", []),
    }
    columns: list[str] = []
    exprs: list[str] = []
    params: list[Any] = []
    for field in Message._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.name in explicit:
            expr, values = explicit[field.name]
        elif field.name in ("created_at", "updated_at"):
            expr, values = "%s", [field.get_db_prep_save(now, connection)]
        elif field.name == "context":
            # As messages_queue(utm=...) stores it: campaigns/utm.py tags the tracked links (finding 8).
            utm = utm_clean(broadcast.utm, where=f"broadcast {broadcast.key} utm")
            expr, values = "%s", [field.get_db_prep_save({"utm": utm} if utm else {}, connection)]
        else:
            expr, values = "%s", [field.get_db_prep_save(field.get_default(), connection)]
        exprs.append(expr)
        params += values
    return columns, exprs, params


def _messages_insert(broadcast: Broadcast, low: int, high: int) -> None:
    columns, exprs, params = _insert_columns(broadcast, timezone.now())
    sql = (f"INSERT INTO {Message._meta.db_table} ({', '.join(columns)}) "  # noqa: S608  names from models
           f"SELECT {', '.join(exprs)} FROM {BroadcastRecipient._meta.db_table} r "
           f"JOIN {BroadcastVariant._meta.db_table} v ON v.broadcast_id = r.broadcast_id AND v.position = r.variant "
           f"JOIN {EmailTemplateRevision._meta.db_table} rv ON rv.id = v.revision_id "
           "WHERE r.broadcast_id = %s AND r.message_id IS NULL AND r.variant IS NOT NULL AND r.id BETWEEN %s AND %s "
           "ON CONFLICT (idempotency_key) DO NOTHING")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, broadcast.pk, low, high])


def _messages_link(broadcast: Broadcast, low: int, high: int) -> None:
    """Each recipient's message id, found by its key (the outbox's unique index)."""
    table, message = BroadcastRecipient._meta.db_table, Message._meta.db_table
    sql = (f"UPDATE {table} SET message_id = (SELECT m.id FROM {message} m "  # noqa: S608  names from models
           f"WHERE m.idempotency_key = %s || CAST({table}.contact_id AS TEXT)) "
           "WHERE broadcast_id = %s AND message_id IS NULL AND variant IS NOT NULL AND id BETWEEN %s AND %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [broadcast.idempotency_prefix(), broadcast.pk, low, high])


# --- Pause, resume, cancel ------------------------------------------------------------------------


def broadcast_messages(broadcast_id: int) -> QuerySet[Message]:
    return Message.objects.filter(pk__in=BroadcastRecipient.objects.filter(
        broadcast_id=broadcast_id, message__isnull=False).values("message_id"))


PAUSABLE = (BroadcastStatus.SCHEDULED, BroadcastStatus.SENDING, BroadcastStatus.QUEUED)


@transaction.atomic
def broadcast_pause(*, broadcast: Broadcast, actor: Any, reason: str = "") -> int:
    """Stop queueing and hold its queued messages (deferred until resumed; nothing fails, nothing is
    lost). Messages a worker has already claimed go out. Returns how many were held."""
    locked = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
    if locked.status not in PAUSABLE:
        raise BroadcastError(f"{locked.key} is {locked.status}: only a scheduled or sending broadcast is paused.",
                             code="state")
    message = reason or f"Paused by {actor}."
    Broadcast.objects.filter(pk=locked.pk).update(status=BroadcastStatus.PAUSED, paused_from=locked.status,
                                                  status_message=message)
    held = broadcast_messages(locked.pk).filter(status__in=PENDING_STATUSES).update(
        status=MessageStatus.DEFERRED, reason=HOLD_REASON, next_attempt_at=HOLD_UNTIL, updated_at=timezone.now(),
        last_error=f"held: broadcast {locked.key} is paused")
    audit_record(actor=actor, action="broadcast.paused", target=locked, data={"held": held, "reason": message})
    broadcast.refresh_from_db()
    return held


@transaction.atomic
def broadcast_resume(*, broadcast: Broadcast, actor: Any, now: dt.datetime | None = None) -> int:
    """Release the held messages (each at its planned time) and go on queueing. Returns how many.
    In each contact's time zone, the planned times of what is not sent yet are computed again from
    now: the window planned may be over (review finding 5)."""
    now = now or timezone.now()
    locked = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
    if locked.status != BroadcastStatus.PAUSED:
        raise BroadcastError(f"{locked.key} is {locked.status}, not paused.", code="state")
    if locked.schedule == ScheduleKind.LOCAL and locked.started_at is not None:
        _local_times_write(locked, now, BroadcastRecipient.objects.filter(broadcast_id=locked.pk).filter(
            Q(message__isnull=True) | Q(message__status=MessageStatus.DEFERRED, message__reason=HOLD_REASON)))
    back = locked.paused_from or BroadcastStatus.SENDING
    Broadcast.objects.filter(pk=locked.pk).update(status=back, paused_from="", status_message="")
    planned = BroadcastRecipient.objects.filter(message_id=OuterRef("pk")).values("send_at")[:1]
    released = broadcast_messages(locked.pk).filter(status=MessageStatus.DEFERRED, reason=HOLD_REASON).update(
        status=MessageStatus.QUEUED, reason="", last_error="", next_attempt_at=Subquery(planned),
        updated_at=timezone.now())
    audit_record(actor=actor, action="broadcast.resumed", target=locked, data={"released": released})
    delivery_kick(locked.sender_id)
    if back == BroadcastStatus.SENDING:
        broadcast_queue_kick(locked.pk)
    broadcast.refresh_from_db()
    return released


CANCELLABLE = (BroadcastStatus.APPROVED, *PAUSABLE, BroadcastStatus.PAUSED)


@transaction.atomic
def broadcast_cancel(*, broadcast: Broadcast, actor: Any, reason: str) -> int:
    """Stop it for good: messages not sent yet are cancelled (suppressed, reason
    broadcast_cancelled, with the reason given); recipients without a message never get one.
    Messages already claimed by a worker go out. Returns how many were cancelled."""
    reason = " ".join((reason or "").split())[:500]
    if not reason:
        raise BroadcastError({"reason": "Say why it is cancelled (kept with the broadcast and its messages)."})
    locked = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
    if locked.status not in CANCELLABLE:
        raise BroadcastError(f"{locked.key} is {locked.status}: it cannot be cancelled.", code="state")
    Broadcast.objects.filter(pk=locked.pk).update(status=BroadcastStatus.CANCELLED, status_message=reason)
    cancelled = broadcast_messages(locked.pk).filter(status__in=PENDING_STATUSES).update(
        status=MessageStatus.SUPPRESSED, reason=CANCEL_REASON, next_attempt_at=None, updated_at=timezone.now(),
        last_error=f"not sent: broadcast {locked.key} was cancelled by {actor}: {reason}"[:2000])
    audit_record(actor=actor, action="broadcast.cancelled", target=locked,
                 data={"cancelled_messages": cancelled, "reason": reason})
    broadcast.refresh_from_db()
    return cancelled


# --- A/B decision ---------------------------------------------------------------------------------


@dataclass
class VariantStats:
    label: str
    position: int
    revision: int | None
    subject: str
    sent: int
    opens: int
    clicks: int
    pending: int = 0  # test messages not sent yet and not finished otherwise (still to write, queued, deferred)
    last_sent_at: dt.datetime | None = None

    def rate(self, metric: str) -> float:
        hits = self.opens if metric == AbMetric.OPENS else self.clicks
        return hits / self.sent if self.sent else 0.0


def variant_stats(broadcast: Broadcast) -> list[VariantStats]:
    """Per variant, over its test group's messages: sent, unique opens, unique clicks, how many
    are still to go and when the last one was sent."""
    unsent = Q(message__isnull=True) | Q(message__status__in=[*PENDING_STATUSES, MessageStatus.SENDING])
    rows = {r["variant"]: r for r in BroadcastRecipient.objects.filter(
        broadcast_id=broadcast.pk, variant__isnull=False).values("variant").annotate(
        sent=Count("pk", filter=Q(message__sent_at__isnull=False)),
        opens=Count("pk", filter=Q(message__opened_at__isnull=False)),
        clicks=Count("pk", filter=Q(message__clicked_at__isnull=False)),
        pending=Count("pk", filter=unsent), last_sent_at=Max("message__sent_at"))}

    def get(position: int, name: str) -> Any:
        return rows.get(position, {}).get(name) or (None if name == "last_sent_at" else 0)

    return [VariantStats(v.label, v.position, v.revision_id, v.revision.subject if v.revision else "",
                         get(v.position, "sent"), get(v.position, "opens"), get(v.position, "clicks"),
                         get(v.position, "pending"), get(v.position, "last_sent_at"))
            for v in broadcast.variants.select_related("revision").order_by("position")]


def ab_leader(stats: list[VariantStats], metric: str) -> VariantStats:
    """The best rate; on a tie the one with more sent messages, then the earlier variant: the
    reports' rule (campaigns/reports.py ab_compare), so the decision and its confidence figure
    name the same leader (review finding 11)."""
    return max(stats, key=lambda s: (s.rate(metric), s.sent, -s.position))


AB_RECHECK = dt.timedelta(minutes=5)  # a decision pushed back for too few sent messages looks again after this


def ab_not_ready(broadcast: Broadcast, stats: list[VariantStats], now: dt.datetime) -> tuple[str, dt.datetime | None]:
    """(why the winner cannot be chosen yet, when to look again); ("", None) when it can. Review
    finding 4: the wait counts from the last test message sent, and every variant needs
    `ab_min_sent` sent messages unless none of its test messages is left to send (a small audience,
    or the rest suppressed: waiting would not add any)."""
    short = [s for s in stats if s.sent < broadcast.ab_min_sent and s.pending]
    if short:
        counts = ", ".join(f"{s.label} {s.sent} ({s.pending} to go)" for s in short)
        return (f"A/B decision pushed back: fewer than {broadcast.ab_min_sent} test messages sent "
                f"(ab_min_sent) for {counts}.", now + AB_RECHECK)
    last = max((s.last_sent_at for s in stats if s.last_sent_at), default=None)
    due = last + dt.timedelta(minutes=broadcast.ab_wait_minutes) if last else None
    if due is not None and due > now:
        return (f"A/B decision pushed back to {due:%Y-%m-%d %H:%M %Z}: {broadcast.ab_wait_minutes} minutes after "
                f"the last test message was sent ({last:%H:%M:%S %Z}).", due)
    return "", None


def _confidence(stats: list[VariantStats], metric: str) -> dict[str, Any]:
    """Each variant's confidence that it differs from the leader: the reports' two-proportion
    z-test (campaigns/reports.py ab_compare, issue 21 item 4), over the same counts the winner was
    chosen by. Imported when it exists: the decision stands without the figure."""
    try:
        reports: Any = importlib.import_module("campaigns.reports")
        compare, variant = reports.ab_compare, reports.Variant
    except (ImportError, AttributeError):
        return {}
    try:
        comparison = compare([variant(name=s.label, successes=s.opens if metric == AbMetric.OPENS else s.clicks,
                                      trials=s.sent) for s in stats])
    except (ValueError, ZeroDivisionError):
        log.warning("broadcast A/B: no confidence figure", exc_info=True)
        return {}
    return {"method": comparison.method, "leader": comparison.leader,
            "confidence": {r.name: None if r.confidence is None else round(r.confidence, 4)
                           for r in comparison.results}}


def broadcast_ab_decide(*, broadcast: Broadcast, actor: Any = "system", now: dt.datetime | None = None) -> int | None:
    """Choose the winner by its rate of unique opens or clicks (sent messages of its test group;
    a tie goes as in ab_leader), record the decision with its numbers, and give the rest of the
    audience the winner, at local times computed now for a time-zone broadcast. Returns the
    winner's position; None if not due (pushed back, with the reason on the broadcast and in the
    audit log, see ab_not_ready) or already decided."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = Broadcast.objects.select_for_update(of=("self",)).select_related("sender").filter(
            pk=broadcast.pk, status=BroadcastStatus.SENDING, winner__isnull=True).first()
        if locked is None or locked.ab_decide_at is None or locked.ab_decide_at > now:
            return None
        stats = variant_stats(locked)
        why, later = ab_not_ready(locked, stats, now)
        if why:
            Broadcast.objects.filter(pk=locked.pk).update(ab_decide_at=later, status_message=why)
            if why != locked.status_message:
                audit_record(actor=actor, action="broadcast.ab_deferred", target=locked,
                             data={"reason": why, "until": later.isoformat() if later else None})
            broadcast.refresh_from_db()
            return None
        metric = locked.ab_metric
        confidence = _confidence(stats, metric)
        # The z-test's leader when it names one (the same rule; this keeps them one even if it changes).
        best = next((s for s in stats if s.label == confidence.get("leader")), None) or ab_leader(stats, metric)
        runner = max((s for s in stats if s is not best), key=lambda s: s.rate(metric), default=None)
        decision = {
            "metric": metric, "decided_at": now.isoformat(), "winner": best.label,
            "variants": [{"label": s.label, "revision": s.revision, "subject": s.subject, "sent": s.sent,
                          "unique_opens": s.opens, "unique_clicks": s.clicks, "rate": round(s.rate(metric), 4)}
                         for s in stats],
            "difference": round(best.rate(metric) - runner.rate(metric), 4) if runner else None,
            **confidence,
        }
        Broadcast.objects.filter(pk=locked.pk).update(winner=best.position, decision=decision, status_message="")
        remainder = BroadcastRecipient.objects.filter(broadcast_id=locked.pk, variant__isnull=True,
                                                      message__isnull=True)
        if locked.schedule == ScheduleKind.LOCAL:
            _local_times_write(locked, now, remainder)  # the times planned at start may be past (finding 5)
        rest = remainder.update(variant=best.position)
        decision["rest"] = rest
        Broadcast.objects.filter(pk=locked.pk).update(decision=decision)
        audit_record(actor=actor, action="broadcast.ab_decided", target=locked, data=decision)
        broadcast_queue_kick(locked.pk)
    broadcast.refresh_from_db()
    return best.position


# --- The periodic tick ----------------------------------------------------------------------------


def broadcasts_tick(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Start scheduled broadcasts that are due, decide A/B tests that are due, and kick any sending
    broadcast with recipients still to queue (its job was lost with Redis or a killed worker)."""
    now = now or timezone.now()
    started = decided = kicked = 0
    for broadcast in Broadcast.objects.filter(status=BroadcastStatus.SCHEDULED, send_at__lte=now):
        try:
            broadcast_start(broadcast=broadcast, actor="scheduler", now=now)
            started += 1
        except ValidationError as exc:
            # Left approved with the reason on it (the list is shown in the admin), not retried each tick.
            text = "; ".join(exc.messages)
            Broadcast.objects.filter(pk=broadcast.pk, status=BroadcastStatus.SCHEDULED).update(
                status=BroadcastStatus.APPROVED, status_message=f"Not started at {now:%Y-%m-%d %H:%M}: {text}")
            audit_record(actor="scheduler", action="broadcast.start_failed", target=broadcast, data={"error": text})
    for broadcast in Broadcast.objects.filter(status=BroadcastStatus.SENDING, winner__isnull=True,
                                              ab_decide_at__lte=now):
        decided += broadcast_ab_decide(broadcast=broadcast, now=now) is not None
    for broadcast_id in Broadcast.objects.filter(status=BroadcastStatus.SENDING).values_list("pk", flat=True):
        if broadcast_pending(broadcast_id).exists():
            broadcast_queue_kick(broadcast_id)
            kicked += 1
        else:
            with transaction.atomic():
                locked = Broadcast.objects.select_for_update().filter(pk=broadcast_id,
                                                                      status=BroadcastStatus.SENDING).first()
                if locked is not None:
                    _finish_if_done(locked)
    return {"started": started, "decided": decided, "kicked": kicked}


# --- Progress -------------------------------------------------------------------------------------


@dataclass
class Progress:
    total: int
    not_queued: int  # recipients without a message yet (still queueing, or waiting for the A/B winner)
    queued: int  # in the outbox, not sent yet (queued, deferred, sending)
    held: int  # held by a pause
    sent: int
    failed: int  # failed or bounced
    suppressed: int  # not sent on purpose: suppression, consent, topic, frequency cap
    cancelled: int

    def percent(self, n: int) -> float:
        return round(100 * n / self.total, 1) if self.total else 0.0


def broadcast_progress(broadcast: Broadcast) -> Progress:
    recipients = BroadcastRecipient.objects.filter(broadcast_id=broadcast.pk)
    total = recipients.count()
    not_queued = recipients.filter(message__isnull=True).count()
    by: dict[tuple[str, str], int] = {}
    for row in broadcast_messages(broadcast.pk).values("status", "reason").annotate(n=Count("pk")):
        key = (row["status"], row["reason"] if row["reason"] in (HOLD_REASON, CANCEL_REASON) else "")
        by[key] = by.get(key, 0) + row["n"]

    def count(*statuses: str, reason: str = "") -> int:
        return sum(by.get((s, reason), 0) for s in statuses)

    return Progress(
        total=total, not_queued=not_queued,
        queued=count(MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING),
        held=count(MessageStatus.DEFERRED, reason=HOLD_REASON), sent=count(MessageStatus.SENT),
        failed=count(MessageStatus.FAILED, MessageStatus.BOUNCED), suppressed=count(MessageStatus.SUPPRESSED),
        cancelled=count(MessageStatus.SUPPRESSED, reason=CANCEL_REASON))


def broadcast_warnings(broadcast: Broadcast) -> list[str]:
    """What the marketer should know while it sends: a paused sender or sending switch holds it."""
    from core.services import switch_paused

    warnings = []
    if broadcast.status in (BroadcastStatus.SENDING, BroadcastStatus.QUEUED):
        waiting = broadcast_messages(broadcast.pk).filter(status__in=PENDING_STATUSES).count()
        if waiting and broadcast.sender.is_paused:
            warnings.append(f"Sender {broadcast.sender} is paused: {waiting} message(s) of this broadcast wait in "
                            "the outbox, held, not lost. They go out when Ops resumes the sender.")
        elif waiting and switch_paused("sending"):
            warnings.append(f"All sending is paused (operations page): {waiting} message(s) wait, held, not lost.")
    return warnings
