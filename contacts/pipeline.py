"""What happens after an event or a contact change ("React" in docs/architecture.md):
scoring rules, then the segment membership they affect, in one transaction per batch.

The scoring and segment engines are imported inside the functions: they live in other modules
that import contacts.models, and the pipeline is their only caller here.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Collection
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Retry
from rq.job import Job, JobStatus

from contacts.models import Event
from contacts.segments.sql import id_set
from core import tracing
from core.logs import contact_causes, rows_extra
from core.queues import get_connection, get_queue

log = logging.getLogger(__name__)

SWEEP_AFTER = timedelta(minutes=2)  # an event still unprocessed this long after arrival lost its job
SWEEP_BATCH = 500
CLAIM_LIMIT = 4000  # events one job may take on (its own ids first)
SMALL_CAUSE = 50  # events of one cause (correlation id: a request, an API call) in a look; more is a burst
SMALL_LIMIT = 1000  # events of small causes per transaction of the coalesced job
BURST_CHUNK = 250  # events of bursts per coalesced job: ~0.3 s, then the other queues get a turn
SWEEP_MAX_BATCHES = 20  # per run (every minute): 10,000 events; the next run takes the rest
PENDING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
# Names the `events_process_pending` job waiting in the queue: new events then cost no job of their
# own (a signup form posting one event per request would otherwise make one job per request, and a
# stream of them kept the worker busy with ~30 ms jobs). The job clears it before it claims, so an
# event committed after that sets it again. Only a hint: a flag naming a job that no longer waits
# (an emptied queue, an enqueue that failed) is replaced by the next event's kick; a lost flag or
# job leaves the events unprocessed in the database, where the sweeper (SWEEP_AFTER) finds them.
PENDING_FLAG = "leadflow:events:pending"
PENDING_FLAG_TTL = 120  # seconds; longer than a job normally waits in the queue
PENDING_JOB = "contacts.tasks_events.events_process_pending"
# A failed job (the database restarting) is tried again soon: events stored before it failed would
# otherwise wait for the next event's kick or the sweeper (SWEEP_AFTER).
PENDING_RETRY = Retry(max=3, interval=[1, 5, 30])
# One round trip (what SET NX cost): take the flag for job ARGV[1] unless it names a job still
# queued (RQ keeps a job's status in its hash, ARGV[3] + id).
_KICK_LUA = """
local current = redis.call('GET', KEYS[1])
if current and redis.call('HGET', ARGV[3] .. current, 'status') == 'queued' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


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
    job_id = f"events-pending-{uuid.uuid4().hex}"
    try:
        conn = get_connection()
        if not conn.register_script(_KICK_LUA)(keys=[PENDING_FLAG],
                                               args=[job_id, PENDING_FLAG_TTL, Job.redis_job_namespace_prefix]):
            return False
        meta = {"correlation_id": correlation_id} if correlation_id else None
        get_queue("events").enqueue(PENDING_JOB, meta=meta, job_id=job_id, retry=PENDING_RETRY)
    except RedisError:
        # The events are committed; the sweeper re-queues them after SWEEP_AFTER.
        log.warning("events: Redis unavailable, processing waits for the sweeper", exc_info=True)
        return False
    return True


def events_process_pending() -> int:
    """The coalesced job: look at the oldest unprocessed events (up to CLAIM_LIMIT) and process
    those of small causes (a request's few events: signups) in one transaction, then at most
    BURST_CHUNK of a burst's (an API call of hundreds) in another; if events remain, kick a fresh
    job for them (so other queues get their turn between batches). A signup that arrives while a
    burst is stored is thus never in the same transaction as more than BURST_CHUNK of the burst's
    events, and never waits for the whole burst: its first email is queued by the next job, and
    the worker's other queues (delivery) run between the burst's chunks. On SQLite, where a
    transaction holds the only writer lock, the chunks also let requests write between them.
    Returns how many events it processed."""
    try:
        # Cleared before claiming: an event committed from here on kicks a new job (which may find
        # its event already taken by this one), an event committed before is seen by the claim.
        get_connection().delete(PENDING_FLAG)
    except RedisError:
        log.warning("events: could not clear the pending flag; it expires", exc_info=True)
    small, big, full = _pending_by_cause()
    processed, overlapped = 0, False
    for ids in (small[:SMALL_LIMIT], big[:BURST_CHUNK]):
        if not ids:
            continue
        try:
            with transaction.atomic():
                processed += _process_batch(ids, with_others=False)
        except BatchOverlap:
            log.warning("pending events batch overlapped a concurrent run; rolled back, queued again")
            overlapped = True
    if overlapped or full or len(small) > SMALL_LIMIT or len(big) > BURST_CHUNK:
        events_kick()
    return processed


def _pending_by_cause() -> tuple[list[int], list[int], bool]:
    """The oldest unprocessed events (up to CLAIM_LIMIT; a read, no locks) as (ids of small
    causes, ids of the rest, whether the look was full), each oldest first. A cause is the
    correlation id (the request or call that stored the event); more than SMALL_CAUSE events of
    one is a burst. A contact with an event of a burst has all its events here processed with the
    burst's, in time order, so no contact's events are processed out of order."""
    rows = list(Event.objects.filter(processed_at__isnull=True).order_by("received_at", "id")
                .values_list("id", "contact_id", "correlation_id")[:CLAIM_LIMIT])  # event_unprocessed_idx
    sizes = Counter(cause for _, _, cause in rows if cause)
    in_burst = {contact for _, contact, cause in rows if cause and sizes[cause] > SMALL_CAUSE}
    small = [pk for pk, contact, _ in rows if contact not in in_burst]
    big = [pk for pk, contact, _ in rows if contact in in_burst]
    return small, big, len(rows) >= CLAIM_LIMIT


def _process_batch(event_ids: list[int] | None, *, with_others: bool = True) -> int:
    from contacts.segments.services import segments_update_contacts
    from scoring.services import score_events, score_fit

    events = _lock_unprocessed(event_ids, with_others=with_others)
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


def _lock_unprocessed(event_ids: list[int] | None, *, with_others: bool = True) -> list[Event]:
    """Unprocessed events among the ids (None: no ids of its own), plus (`with_others`) other pending
    events up to CLAIM_LIMIT, in time order. Taking what else is pending turns a backlog of small
    jobs into a few big batches (the per-batch rule and segment queries dominate small ones); the
    jobs for those events then find nothing left to do. The coalesced job chose its ids itself
    (`with_others=False`). On PostgreSQL rows another worker is processing are skipped (SKIP LOCKED)."""
    skip_locked = connection.features.has_select_for_update_skip_locked
    unprocessed = Event.objects.filter(processed_at__isnull=True)
    events: list[Event] = []
    if event_ids is not None:
        own = unprocessed.filter(pk__in=id_set(event_ids))
        if skip_locked:
            own = own.select_for_update(skip_locked=True)
        events = list(own)
        unprocessed = unprocessed.exclude(pk__in=id_set(event_ids))
    if with_others and (events or event_ids is None) and len(events) < CLAIM_LIMIT:
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
