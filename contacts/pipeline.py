"""What happens after an event or a contact change ("React" in docs/architecture.md):
scoring rules, then the segment membership they affect, in one transaction per batch.

The scoring and segment engines are imported inside the functions: they live in other modules
that import contacts.models, and the pipeline is their only caller here.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq.job import JobStatus

from contacts.models import Event
from contacts.segments.sql import id_set
from core import tracing
from core.logs import contact_causes, rows_extra
from core.queues import get_connection, get_queue

log = logging.getLogger(__name__)

SWEEP_AFTER = timedelta(minutes=2)  # an event still unprocessed this long after arrival lost its job
SWEEP_BATCH = 500
CLAIM_LIMIT = 4000  # events one job may take on (its own ids first)
SWEEP_MAX_BATCHES = 20  # per run (every minute): 10,000 events; the next run takes the rest
PENDING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
# Set while an `events_process_pending` job waits in the queue: new events then cost no job of their
# own (a signup form posting one event per request would otherwise make one job per request, and a
# stream of them kept the worker busy with ~30 ms jobs). The job clears it before it claims, so an
# event committed after that sets it again. Only a hint: a lost flag or job leaves the events
# unprocessed in the database, where the TTL, the next event or the sweeper (SWEEP_AFTER) finds them.
PENDING_FLAG = "leadflow:events:pending"
PENDING_FLAG_TTL = 120  # seconds; longer than a job normally waits in the queue
PENDING_JOB = "contacts.tasks_events.events_process_pending"


class BatchOverlap(Exception):
    """Another worker processed some of these events meanwhile; this attempt is rolled back."""


def events_process(*, event_ids: Collection[int]) -> int:
    """Score, update segments for and mark processed the unprocessed events among `event_ids`.

    Idempotent: processed events are skipped, and if a concurrent run (a sweeper re-queue) claims
    any of them first, this run's whole transaction is undone, so no rule is applied twice.
    Returns how many of the given events this call processed.
    """
    try:
        with transaction.atomic():
            return _process_batch(list(event_ids))
    except BatchOverlap:
        log.warning("events batch of %s ids overlapped a concurrent run; rolled back, the sweeper retries "
                    "what is left", len(event_ids))
        return 0


def events_kick(*, correlation_id: str = "") -> bool:
    """Make sure one `events_process_pending` job will look at the unprocessed events: enqueue one
    unless one is already waiting (PENDING_FLAG). Call after COMMIT. Returns whether it enqueued.
    `correlation_id` (the kicking request's) becomes the job's id in the logs."""
    try:
        if not get_connection().set(PENDING_FLAG, "1", nx=True, ex=PENDING_FLAG_TTL):
            return False
        meta = {"correlation_id": correlation_id} if correlation_id else None
        get_queue("events").enqueue(PENDING_JOB, meta=meta)
    except RedisError:
        # The events are committed; the sweeper re-queues them after SWEEP_AFTER.
        log.warning("events: Redis unavailable, processing waits for the sweeper", exc_info=True)
        return False
    return True


def events_process_pending() -> int:
    """The coalesced job: process the oldest unprocessed events, up to CLAIM_LIMIT, in one batch;
    if it was full, kick a fresh job for the rest (one batch per job, so other queues get their
    turn between batches). Returns how many events it processed."""
    try:
        # Cleared before claiming: an event committed from here on kicks a new job (which may find
        # its event already taken by this one), an event committed before is seen by the claim.
        get_connection().delete(PENDING_FLAG)
    except RedisError:
        log.warning("events: could not clear the pending flag; it expires", exc_info=True)
    overlapped = False
    try:
        with transaction.atomic():
            processed = _process_batch(None)
    except BatchOverlap:
        log.warning("pending events batch overlapped a concurrent run; rolled back, queued again")
        overlapped, processed = True, 0
    if overlapped or processed >= CLAIM_LIMIT:
        events_kick()
    return processed


def _process_batch(event_ids: list[int] | None) -> int:
    from contacts.segments.services import segments_update_contacts
    from scoring.services import score_events, score_fit

    events = _lock_unprocessed(event_ids)
    if not events:
        return 0
    contact_ids = {e.contact_id for e in events}
    # Rows written for a contact below (CRM rows queued by a score change, segment events) take
    # the correlation id of its latest event in the batch: events are in time order.
    causes = {e.contact_id: e.correlation_id for e in events if e.correlation_id}
    with contact_causes(causes), tracing.batch("events.batch", (e.correlation_id for e in events), events=len(events)):
        with tracing.span("events.scoring"):
            changed = set(score_events(events=events))
            # The API creates contacts for unknown emails: their fit rules are first evaluated here
            # (one query per fit rule per batch; contacts already scored get no new entries).
            changed |= score_fit(contact_ids=contact_ids)
        with tracing.span("events.segments"):
            segment_events = segments_update_contacts(contact_ids=contact_ids | changed)
            if segment_events:  # created processed: scored here, in this transaction
                score_events(events=segment_events)  # one level: segment changes caused by these scores wait
        # A new MQL without an owner gets one from the routing rules, before workflows tell its owner.
        from contacts.owners import leads_route_new_mqls
        leads_route_new_mqls(events=events)
        from automation.services import workflows_on_events  # goals, then triggers; first steps run after COMMIT
        with tracing.span("events.triggers"):
            workflows_on_events(events=[*events, *segment_events])
    own = [e.pk for e in events]
    now = timezone.now()
    if Event.objects.filter(pk__in=id_set(own), processed_at__isnull=True).update(processed_at=now) != len(own):
        raise BatchOverlap
    log.info("events processed", extra={"processed": len(own), "segment_events": len(segment_events),
                                        **rows_extra("event_ids", ((e.pk, e.correlation_id) for e in events))})
    return len(own)


def _lock_unprocessed(event_ids: list[int] | None) -> list[Event]:
    """Unprocessed events among the ids (None: no ids of its own, the coalesced job), plus other
    pending events up to CLAIM_LIMIT, in time order. Taking what else is pending turns a backlog of
    small jobs into a few big batches (the per-batch rule and segment queries dominate small ones);
    the jobs for those events then find nothing left to do. On PostgreSQL rows another worker is
    processing are skipped (SKIP LOCKED)."""
    skip_locked = connection.features.has_select_for_update_skip_locked
    unprocessed = Event.objects.filter(processed_at__isnull=True)
    events: list[Event] = []
    if event_ids is not None:
        own = unprocessed.filter(pk__in=id_set(event_ids))
        if skip_locked:
            own = own.select_for_update(skip_locked=True)
        events = list(own)
        unprocessed = unprocessed.exclude(pk__in=id_set(event_ids))
    if (events or event_ids is None) and len(events) < CLAIM_LIMIT:
        # Oldest first, served by the partial index on received_at where processed_at is null.
        others = unprocessed.order_by("received_at", "id")
        if skip_locked:
            others = others.select_for_update(skip_locked=True)
        events += list(others[: CLAIM_LIMIT - len(events)])
    events.sort(key=lambda e: (e.occurred_at, e.pk))
    return events


def contacts_changed(*, contact_ids: Collection[int]) -> set[int]:
    """After contacts were edited (API upsert, admin): fit scoring, then segment membership.

    Returns the ids whose fit score changed."""
    from contacts.segments.services import segments_update_contacts
    from scoring.services import score_events, score_fit

    ids = set(contact_ids)
    if not ids:
        return set()
    with transaction.atomic():
        changed = set(score_fit(contact_ids=ids))
        segment_events = segments_update_contacts(contact_ids=ids | changed)
        if segment_events:  # created processed: scored here, in this transaction
            score_events(events=segment_events)
            from automation.services import workflows_on_events  # segment_entered triggers and goals

            workflows_on_events(events=segment_events)
        from automation.crm.services import crm_contacts_changed  # CRM sync: queue changed payloads
        crm_contacts_changed(contact_ids=ids, reason="contact")
    return changed


def events_sweep() -> int:
    """Re-queue events unprocessed for over 2 minutes (their job was lost: Redis flushed, worker
    killed, enqueue failed after commit). Returns how many events were re-queued."""
    cutoff = timezone.now() - SWEEP_AFTER
    # Served by the partial index event_unprocessed_idx (received_at WHERE processed_at IS NULL).
    stale = list(
        Event.objects.filter(processed_at__isnull=True, received_at__lt=cutoff)
        .order_by("received_at").values_list("pk", flat=True)[: SWEEP_BATCH * SWEEP_MAX_BATCHES]
    )
    queue = get_queue("events")
    requeued = 0
    for start in range(0, len(stale), SWEEP_BATCH):
        chunk = stale[start:start + SWEEP_BATCH]
        job_id = f"events-sweep-{chunk[0]}-{chunk[-1]}-{len(chunk)}"
        existing = queue.fetch_job(job_id)
        if existing is not None and existing.get_status(refresh=False) in PENDING:
            continue  # last minute's re-queue of the same events has not run yet (a backlog)
        queue.enqueue("contacts.tasks_events.events_process", chunk, job_id=job_id)
        requeued += len(chunk)
    if requeued:
        log.warning("events sweeper re-queued %s unprocessed events", requeued)
    return requeued


def contacts_rescan_all() -> None:
    """After bulk changes (an import, demo data): rebuild fit-rule scores and refresh every segment,
    set-based. Cheaper than per-contact work for a million rows, and the same result."""
    from contacts.segments.services import segments_refresh_all
    from scoring.models import RuleKind, ScoringRule
    from scoring.services import scores_recompute_all

    fit_rules = list(ScoringRule.objects.filter(kind=RuleKind.FIT, is_active=True).values_list("pk", flat=True))
    if fit_rules:
        scores_recompute_all(rule_ids=fit_rules)
    segments_refresh_all()
