"""CRM sync services: queue (coalesced, unchanged payloads skipped), send batches under the shared
rate limiter, record every outcome; inbound sales status changes become events.

Entry points
- crm_contacts_changed(contact_ids=, reason=)   hooks: contact edits, score/grade/MQL changes, imports
- crm_sync_request(contact_id=, ...)            the workflow `crm_sync` step
- crm_sync_now / crm_resync_all / crm_retry_failed   admin actions
- crm_sync_batch(connection_id=)                one claimed batch, one request (the `crm` worker loops it)
- crm_sweep()                                   re-queue rows whose worker died; wake idle connections
- crm_inbound_status(connection=, items=)       the CRM reports accepted / rejected / closed
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from automation.crm.connectors import Connector, Fate, ItemResult, OutItem, SendResult, connector_for
from automation.crm.mapping import Payload, build_payload, contact_rows, payloads_for
from automation.crm.models import CrmConnection, CrmSyncItem, CrmSyncLog, LogOutcome, SyncStatus
from automation.crm.vault import SecretUnavailable
from contacts.models import Contact, Event
from core import tracing
from core.audit import audit_record
from core.logs import correlation_for_contact, current_correlation_id, rows_extra
from core.queues import get_connection, get_queue
from core.services import switch_paused
from core.throttle import Rate, Throttle, parse_rate
from core.utils import chunked

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8  # transient failures (5xx, timeouts) per item before it is failed visibly
BACKOFF_BASE = 2.0  # seconds; doubles per attempt, capped, with jitter
BACKOFF_CAP = 900.0
RATE_SAFETY = 0.98  # send at 98 % of the CRM's limit: clock and network jitter never tip it over
MAX_INLINE_WAIT = 30.0  # a 429's Retry-After up to this is waited out holding the batch
MAX_RATE_LIMITED_RESENDS = 3
STALE_SENDING = dt.timedelta(minutes=5)  # a row "sending" this long lost its worker
RUN_SECONDS = 240.0  # one job sends for this long, then hands over to a fresh job
QUEUED_FLAG_TTL = 600  # seconds; the "a job is queued" marker outlives a lost job by at most this
CHUNK = 1000
JOB = "automation.crm.tasks.crm_sync_run"


# --- Queueing -----------------------------------------------------------------------------------------


def _active_connections(*, sandbox: bool = False) -> list[CrmConnection]:
    return list(CrmConnection.objects.filter(is_active=True, is_sandbox=sandbox))


def crm_contacts_changed(*, contact_ids: Collection[int], reason: str, correlation_id: str | None = None) -> int:
    """Queue a sync of these contacts on every active (non-sandbox) connection whose payload changed.

    Set-based: per connection, one query per 1,000 contacts for their mapped fields and one for
    their rows, then bulk inserts/updates. Unchanged payloads (same hash as what the CRM accepted,
    or as what it rejected) queue nothing. Returns how many rows were queued or re-queued.

    The rows take `correlation_id`, by default each contact's cause in the event batch at hand
    (core.logs.contact_causes), else the current request's or job's."""
    ids = set(contact_ids)
    if not ids:
        return 0
    queued = 0
    for conn in _active_connections():
        for chunk in chunked(sorted(ids), CHUNK):
            payloads = list(payloads_for(contact_ids=chunk, mapping=conn.field_mapping, score_step=conn.score_step,
                                         values=conn.values()))
            causes = {cid: correlation_id or correlation_for_contact(cid) for cid in chunk}
            queued += _queue(conn, payloads, reason=reason, force=False, causes=causes)
    return queued


def _queue(conn: CrmConnection, payloads: Sequence[Payload], *, reason: str, force: bool,
           now: dt.datetime | None = None, causes: Mapping[int, str] | None = None) -> int:
    """Coalesce the payloads onto the connection's rows (one per contact).

    `causes`: contact id -> the correlation id of the change queuing it (default: the current
    request's or job's). A row is one per contact, so the latest change wins: a row queued (or
    re-queued, or changed while pending or in flight) takes this change's id; the earlier causes
    are in the logs."""
    if not payloads:
        return 0
    now = now or timezone.now()
    by_contact = {p.contact_id: p for p in payloads}
    current = current_correlation_id()
    cause = {cid: (causes or {}).get(cid) or current for cid in by_contact}
    rows = {r.contact_id: r for r in CrmSyncItem.objects.filter(connection=conn, contact_id__in=by_contact).only(
        "id", "contact_id", "status", "payload_hash", "synced_hash", "correlation_id")}
    new = [CrmSyncItem(connection=conn, contact_id=cid, payload_hash=p.hash, reason=reason[:40], force=force,
                       next_attempt_at=now, queued_at=now, correlation_id=cause[cid])
           for cid, p in by_contact.items() if cid not in rows]
    requeue: list[CrmSyncItem] = []
    sending: list[CrmSyncItem] = []
    changed_pending: list[CrmSyncItem] = []
    for cid, row in rows.items():
        digest = by_contact[cid].hash
        if row.status == SyncStatus.SENDING:
            if force or digest != row.payload_hash:
                sending.append(row)
        elif row.status == SyncStatus.PENDING:
            if force:  # already queued (it is sent with the data of its send time); only the force is new
                requeue.append(row)
            elif digest != row.payload_hash:
                changed_pending.append(row)  # sent with this change too: only the id is new
        elif force or not (
            (row.status == SyncStatus.SYNCED and digest == row.synced_hash)
            or (row.status == SyncStatus.FAILED and digest == row.payload_hash)  # rejected as is: wait for a fix
        ):
            requeue.append(row)
    if new:
        CrmSyncItem.objects.bulk_create(new, ignore_conflicts=True)  # a concurrent twin wins; same outcome
    if requeue:
        fields: dict[str, Any] = {"status": SyncStatus.PENDING, "attempts": 0, "next_attempt_at": now,
                                  "queued_at": now, "last_error": "", "reason": reason[:40]}
        if force:
            fields["force"] = True
        # One UPDATE per correlation id (usually one), constants only; rows a worker claimed
        # meanwhile are skipped here and marked dirty below.
        for corr, pks in _by_cause(requeue, cause).items():
            CrmSyncItem.objects.filter(pk__in=pks).exclude(status=SyncStatus.SENDING).update(
                **fields, correlation_id=corr)
        sending += requeue
    if sending:
        for corr, pks in _by_cause(sending, cause).items():
            marks: dict[str, Any] = {"dirty": True, "correlation_id": corr, **({"force": True} if force else {})}
            CrmSyncItem.objects.filter(pk__in=pks, status=SyncStatus.SENDING).update(**marks)
    for corr, pks in _by_cause([r for r in changed_pending if r.correlation_id != cause[r.contact_id]],
                              cause).items():
        CrmSyncItem.objects.filter(pk__in=pks, status=SyncStatus.PENDING).update(correlation_id=corr)
    count = len(new) + len(requeue)
    if count:
        log.info("crm rows queued", extra={"connection_id": conn.pk, "reason": reason, "queued": count,
                                           **rows_extra("contact_ids", ((c, cause[c]) for c in (
                                               [r.contact_id for r in new] + [r.contact_id for r in requeue])))})
        enqueue_sync(connection_id=conn.pk)
    return count


def _by_cause(rows: Sequence[CrmSyncItem], cause: Mapping[int, str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for row in rows:
        groups.setdefault(cause[row.contact_id], []).append(row.pk)
    return groups


def crm_contacts_imported(*, job_id: int) -> None:
    """After a CSV import: queue the job that syncs the contacts it wrote (cheap when no connection is
    active; the walk itself runs on the `crm` queue)."""
    if CrmConnection.objects.filter(is_active=True, is_sandbox=False).exists():
        transaction.on_commit(lambda: get_queue("crm").enqueue("automation.crm.tasks.crm_import_sync", job_id))


def crm_import_sync(*, job_id: int) -> int:
    """Contacts an import wrote (updated since it started; imports set updated_at) through
    crm_contacts_changed, 1,000 ids at a time. Returns how many rows were queued."""
    from contacts.models import ImportJob

    started = ImportJob.objects.filter(pk=job_id).values_list("started_at", flat=True).first()
    if started is None:
        return 0
    ids = Contact.objects.filter(updated_at__gte=started).order_by("id").values_list("id", flat=True)
    queued = 0
    for chunk in chunked(ids.iterator(CHUNK), CHUNK):
        with transaction.atomic():
            queued += crm_contacts_changed(contact_ids=chunk, reason="import")
    return queued


@dataclass(frozen=True)
class SyncRequest:
    """What a `crm_sync` step did: queued a row, or (dry run) recorded what it would send."""

    connection_id: int | None
    item_id: int | None = None
    dry_run: bool = False
    payload: dict[str, Any] | None = None
    message: str = ""


def crm_sync_request(*, contact_id: int, connection: CrmConnection | None = None, sandbox: bool = False,
                     dry_run: bool = False, reason: str = "workflow", correlation_id: str | None = None) -> SyncRequest:
    """Queue one contact's sync for a workflow's `crm_sync` step (always sent, even if unchanged).

    - connection: the connection to use; default: the first active connection of the right kind
      (sandbox or not).
    - sandbox=True (a staging version): use the sandbox connection; when there is none, record a
      dry run on the production connection instead of sending anything.
    - dry_run=True: compute and log the payload (outcome "dry_run"), queue nothing.
    Safe to call twice: the (connection, contact) row coalesces. Call inside the step's transaction;
    the sync job leaves after COMMIT. The row takes `correlation_id` (the step's enrollment's;
    default: the current one). Returns what was done (SyncRequest)."""
    if connection is None:
        candidates = _active_connections(sandbox=sandbox)
        if not candidates and sandbox:
            candidates, dry_run = _active_connections(sandbox=False), True
        if not candidates:
            return SyncRequest(None, message="no active CRM connection")
        connection = candidates[0]
    elif sandbox and not connection.is_sandbox:
        dry_run = True  # staging never writes to a production CRM
    payloads = list(payloads_for(contact_ids=[contact_id], mapping=connection.field_mapping,
                                 score_step=connection.score_step, values=connection.values()))
    if not payloads:
        return SyncRequest(connection.pk, message=f"contact {contact_id} does not exist")
    if dry_run:
        CrmSyncLog.objects.create(connection=connection, contact_id=contact_id, at=timezone.now(),
                                  outcome=LogOutcome.DRY_RUN, message=f"would send {payloads[0].properties}")
        return SyncRequest(connection.pk, dry_run=True, payload=payloads[0].properties)
    _queue(connection, payloads, reason=reason, force=True,
           causes={contact_id: correlation_id or correlation_for_contact(contact_id)})
    item_id = CrmSyncItem.objects.filter(connection=connection, contact_id=contact_id).values_list(
        "pk", flat=True).first()
    return SyncRequest(connection.pk, item_id=item_id, payload=payloads[0].properties)


def crm_sync_now(*, connection: CrmConnection, contact_ids: Collection[int], actor: Any = None) -> int:
    """Admin "sync now": queue these contacts, sent even when unchanged, and wake the worker."""
    count = 0
    with transaction.atomic():
        for chunk in chunked(sorted(set(contact_ids)), CHUNK):
            payloads = list(payloads_for(contact_ids=chunk, mapping=connection.field_mapping,
                                         score_step=connection.score_step, values=connection.values()))
            count += _queue(connection, payloads, reason="sync now", force=True)
        audit_record(actor=actor, action="crm.sync_now", target=connection, data={"contacts": count})
    return count


def crm_resync_all(*, connection: CrmConnection, actor: Any = None) -> int:
    """Queue every contact on the connection, sent even when unchanged. Set-based: existing rows in
    one UPDATE, missing rows inserted 1,000 at a time; payloads are built when sent."""
    now = timezone.now()
    with transaction.atomic():
        updated = CrmSyncItem.objects.filter(connection=connection).exclude(status=SyncStatus.SENDING).update(
            status=SyncStatus.PENDING, force=True, attempts=0, next_attempt_at=now, queued_at=now, last_error="",
            reason="resync all")
        CrmSyncItem.objects.filter(connection=connection, status=SyncStatus.SENDING).update(dirty=True, force=True)
        have = CrmSyncItem.objects.filter(connection=connection).values("contact_id")
        missing = Contact.objects.exclude(id__in=have).order_by("id").values_list("id", flat=True).iterator(CHUNK)
        created = 0
        for chunk in chunked(missing, CHUNK):
            CrmSyncItem.objects.bulk_create(
                [CrmSyncItem(connection=connection, contact_id=cid, force=True, next_attempt_at=now, queued_at=now,
                             reason="resync all") for cid in chunk], ignore_conflicts=True)
            created += len(chunk)
        audit_record(actor=actor, action="crm.resync_all", target=connection,
                     data={"requeued": updated, "created": created})
        enqueue_sync(connection_id=connection.pk)
    return updated + created


def crm_retry_failed(*, item_ids: Collection[int] | None = None, connection: CrmConnection | None = None,
                     actor: Any = None) -> int:
    """Retry failed rows by hand (after fixing the data, the mapping or the token): they are sent again."""
    rows = CrmSyncItem.objects.filter(status=SyncStatus.FAILED)
    if item_ids is not None:
        rows = rows.filter(pk__in=list(item_ids))
    if connection is not None:
        rows = rows.filter(connection=connection)
    now = timezone.now()
    with transaction.atomic():
        connection_ids = set(rows.values_list("connection_id", flat=True).distinct())
        count = rows.update(status=SyncStatus.PENDING, force=True, attempts=0, next_attempt_at=now, queued_at=now,
                            reason="retry by hand")
        for cid in connection_ids:
            audit_record(actor=actor, action="crm.retry_failed", target=("crm.crmconnection", cid),
                         data={"items": count})
            enqueue_sync(connection_id=cid)
    return count


# --- Jobs ----------------------------------------------------------------------------------------------


def _queued_flag(connection_id: int) -> str:
    return f"leadflow:crm:sync-queued:{connection_id}"


def enqueue_sync(*, connection_id: int, delay: float = 0.0) -> None:
    """Make sure one sync job for the connection is queued, after COMMIT. Coalesced by a Redis marker
    the job clears when it starts; losing Redis loses the marker and the job, and the sweeper
    re-queues from the rows."""
    transaction.on_commit(partial(_enqueue_now, connection_id, delay))


def _enqueue_now(connection_id: int, delay: float) -> None:
    flag = _queued_flag(connection_id) + (":later" if delay else "")
    try:
        if not get_connection().set(flag, "1", nx=True, ex=QUEUED_FLAG_TTL + int(delay)):
            return
        queue = get_queue("crm")
        if delay:
            queue.enqueue_in(dt.timedelta(seconds=delay), JOB, connection_id, result_ttl=300)
        else:
            queue.enqueue(JOB, connection_id, result_ttl=300)
    except Exception:  # Redis down: the rows are the truth, the sweeper re-queues within a minute
        log.warning("crm: could not enqueue a sync job for connection %s", connection_id, exc_info=True)


def sync_job_started(*, connection_id: int) -> None:
    get_connection().delete(_queued_flag(connection_id), _queued_flag(connection_id) + ":later")


def throttle_for(conn: CrmConnection) -> Throttle:
    rate = parse_rate(conn.rate_limit)
    return Throttle(f"crm:{conn.pk}", Rate(count=rate.count * RATE_SAFETY, period=rate.period, burst=1))


def backoff_delay(attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, "equal jitter" (half fixed,
    half random), so a crowd of failed batches does not come back at the same moment."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    synced: int = 0
    unchanged: int = 0
    failed: int = 0
    retrying: int = 0
    rate_limited: int = 0  # 429 answers received
    splits: int = 0  # batches refused whole (400) and split to isolate the bad contacts
    requests: int = 0
    outcomes: list[str] = field(default_factory=list)


@dataclass
class SyncEnv:
    """What a batch needs from outside, injectable in tests: the clock, sleep, randomness, the connector."""

    now: Callable[[], dt.datetime] = timezone.now
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    connector: Connector | None = None
    throttle: Throttle | None = None


def _claim(conn: CrmConnection, limit: int, now: dt.datetime) -> tuple[str, list[CrmSyncItem]]:
    """Due pending rows, oldest first, claimed with a conditional UPDATE (SKIP LOCKED on PostgreSQL)."""
    token = secrets.token_hex(8)
    with transaction.atomic():
        due = CrmSyncItem.objects.filter(connection=conn, status=SyncStatus.PENDING, next_attempt_at__lte=now)
        due = due.order_by("next_attempt_at", "id")
        if db_connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        ids = list(due.values_list("pk", flat=True)[:limit])
        if not ids:
            return token, []
        CrmSyncItem.objects.filter(pk__in=ids, status=SyncStatus.PENDING).update(
            status=SyncStatus.SENDING, claim_token=token, claimed_at=now, dirty=False)
    return token, list(CrmSyncItem.objects.filter(claim_token=token, status=SyncStatus.SENDING))


def crm_sync_batch(*, connection_id: int, env: SyncEnv | None = None) -> BatchResult:
    """Claim up to batch_size due rows, send the changed ones in one request under the shared limit,
    record each contact's outcome. Returns what happened (claimed == 0: nothing was due)."""
    env = env or SyncEnv()
    result = BatchResult()
    conn = CrmConnection.objects.filter(pk=connection_id, is_active=True).first()
    if conn is None:
        return result
    if conn.paused_until and conn.paused_until > env.now():
        return result  # the CRM's daily limit is spent: rows wait; the job comes back at the reset
    token, rows = _claim(conn, conn.batch_size, env.now())
    result.claimed = len(rows)
    if not rows:
        return result
    values = conn.values()
    payloads = {row["id"]: build_payload(row, conn.field_mapping, conn.score_step, values)
                for row in contact_rows([r.contact_id for r in rows], conn.field_mapping)}
    outcomes: dict[int, tuple[str, str]] = {}  # row id -> (outcome, message)
    to_send: list[tuple[CrmSyncItem, Payload]] = []
    for row in rows:
        payload = payloads.get(row.contact_id)
        if payload is None:
            continue  # the contact was erased meanwhile: its row went with it
        row.payload_hash = payload.hash
        if not row.force and payload.hash == row.synced_hash:
            outcomes[row.pk] = (LogOutcome.UNCHANGED, "")
        else:
            to_send.append((row, payload))
    sends: dict[int, SendResult] = {}  # row id -> the answer to the request that carried it
    if to_send:
        by_contact = {payload.contact_id: row for row, payload in to_send}
        parts = _send_isolating(conn, [OutItem(p.contact_id, p.email, p.properties) for _, p in to_send], env, result)
        for items, send in parts:
            for item in items:
                row = by_contact[item.contact_id]
                sends[row.pk] = send
                outcomes[row.pk] = _item_outcome(send, item.email, row, env)
    result.sent = len(to_send) if result.requests else 0
    _record(conn, token, rows, outcomes, sends, env, result)
    _log_batch(conn, rows, outcomes)
    tracing.causes_done("crm.sync", ((r.correlation_id, outcomes.get(r.pk, ("", ""))[0]) for r in rows),
                        connection_id=conn.pk)
    return result


def _log_batch(conn: CrmConnection, rows: list[CrmSyncItem], outcomes: dict[int, tuple[str, str]]) -> None:
    """One line per batch: each outcome's row ids under their correlation ids."""
    by_outcome: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        if row.pk in outcomes:
            by_outcome.setdefault(outcomes[row.pk][0], []).append((row.pk, row.correlation_id))
    everything = [pair for pairs in by_outcome.values() for pair in pairs]
    extra: dict[str, Any] = {"connection_id": conn.pk, **rows_extra("crm_item_ids", everything)}
    for outcome, pairs in by_outcome.items():
        extra[f"{outcome}_ids"] = [pk for pk, _ in pairs]
    log.info("crm batch", extra=extra)


_CONNECTORS: dict[tuple[int, dt.datetime], Connector] = {}  # per worker process: HTTP keep-alive across batches


def _cached_connector(conn: CrmConnection) -> Connector:
    key = (conn.pk, conn.updated_at)  # an edited connection (token, URL) gets a fresh connector
    if key not in _CONNECTORS:
        for old in [k for k in _CONNECTORS if k[0] == conn.pk]:
            del _CONNECTORS[old]
        _CONNECTORS[key] = connector_for(conn)
    return _CONNECTORS[key]


def _send(conn: CrmConnection, items: list[OutItem], env: SyncEnv, result: BatchResult) -> SendResult:
    """One request under the shared limit; a 429 pauses every worker and is resent a few times."""
    throttle = env.throttle or throttle_for(conn)
    try:
        connector = env.connector or _cached_connector(conn)
    except SecretUnavailable as exc:
        return SendResult(Fate.PERMANENT, message=f"token unavailable: {exc}")
    for _ in range(MAX_RATE_LIMITED_RESENDS + 1):
        if not throttle.acquire(1, max_wait=MAX_INLINE_WAIT * 2, sleep=env.sleep):
            return SendResult(Fate.RATE_LIMITED, message="the shared rate limit did not free up in time",
                              retry_after=MAX_INLINE_WAIT)
        result.requests += 1
        send = connector.send(items)
        if send.pause:
            throttle.pause(send.pause)
        if send.fate is not Fate.RATE_LIMITED:
            return send
        result.rate_limited += 1
        if send.daily_exhausted:
            return send  # not a matter of seconds: the caller pauses the connection until the reset
        wait = send.retry_after if send.retry_after is not None else 10.0
        throttle.pause(wait)  # everyone sharing the limit holds off, not just this worker
        CrmSyncLog.objects.create(connection=conn, at=env.now(), outcome=LogOutcome.RATE_LIMITED,
                                  http_status=send.http_status, message=f"Retry-After {wait:g} s: {send.message}")
        if wait > MAX_INLINE_WAIT:
            return send
    return send


def _send_isolating(conn: CrmConnection, items: list[OutItem], env: SyncEnv,
                    result: BatchResult) -> list[tuple[list[OutItem], SendResult]]:
    """Send the batch; when the CRM refuses it whole for some input's values without saying which
    (HubSpot's 400 without multi-status), split it in halves and send each, down to single contacts,
    so every valid contact goes through and each bad one fails alone with the CRM's message. Every
    extra request takes its token from the shared limiter like any other. Returns each part sent
    with its answer."""
    if conn.paused_until and conn.paused_until > env.now():
        return [(items, _daily_paused(conn, env))]
    send = _send(conn, items, env, result)
    if send.daily_exhausted:
        pause_for_the_day(conn=conn, env=env, send=send)
        if send.fate is Fate.RATE_LIMITED:
            send = _daily_paused(conn, env)
    if send.fate is Fate.PERMANENT and send.splittable and len(items) > 1:
        result.splits += 1
        half = len(items) // 2
        return _send_isolating(conn, items[:half], env, result) + _send_isolating(conn, items[half:], env, result)
    return [(items, send)]


def _daily_paused(conn: CrmConnection, env: SyncEnv) -> SendResult:
    assert conn.paused_until is not None
    wait = max(1.0, (conn.paused_until - env.now()).total_seconds())
    return SendResult(Fate.RATE_LIMITED, 429, f"the CRM's daily API limit is spent; paused until "
                      f"{conn.paused_until:%Y-%m-%d %H:%M %Z}", retry_after=wait)


DAILY_RESET_MARGIN = dt.timedelta(minutes=1)  # our clock and the CRM's may differ a little


def next_daily_reset(now: dt.datetime, time_zone: str) -> dt.datetime:
    """The CRM's next midnight in the account's time zone (HubSpot: "the daily limits reset at
    midnight based on the time zone setting of the HubSpot account"), plus a small margin."""
    import zoneinfo

    zone = zoneinfo.ZoneInfo(time_zone or "UTC")
    tomorrow = now.astimezone(zone).date() + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time(0), tzinfo=zone).astimezone(dt.UTC) + DAILY_RESET_MARGIN


ROLLING_LIMIT_PAUSE = dt.timedelta(hours=1)


def limit_reset(conn: CrmConnection, now: dt.datetime) -> dt.datetime:
    """When a spent daily budget comes back: HubSpot's at the account's midnight; Salesforce's is a
    rolling 24 hours (calls age out one by one), so we look again in an hour."""
    if conn.kind == CrmConnection.Kind.SALESFORCE:
        return now + ROLLING_LIMIT_PAUSE
    return next_daily_reset(now, conn.account_time_zone)


def pause_for_the_day(*, conn: CrmConnection, env: SyncEnv | None = None, send: SendResult | None = None) -> None:
    """The CRM's daily budget is spent: nothing goes out on this connection before its reset, and an
    incident is opened (core.alerts; it resolves itself once the pause is over)."""
    from core.alerts import Firing, open_incident

    now = (env or SyncEnv()).now()
    until = limit_reset(conn, now)
    CrmConnection.objects.filter(pk=conn.pk).update(paused_until=until)
    conn.paused_until = until
    why = send.message if send and send.message else "the CRM reported no daily requests left"
    CrmSyncLog.objects.create(connection=conn, at=now, outcome=LogOutcome.RATE_LIMITED,
                              http_status=send.http_status if send else None,
                              message=f"daily limit: paused until {until:%Y-%m-%d %H:%M %Z} ({why})"[:2000])
    log.warning("crm: daily API limit spent on connection %s; paused until %s", conn.pk, until.isoformat())
    open_incident(Firing(daily_limit_incident_key(conn.pk),
                         f"CRM sync: {conn.name}'s daily API limit is spent; paused until {until:%Y-%m-%d %H:%M} UTC",
                         {"connection": conn.name, "paused_until": until.isoformat()}), now=now)


def daily_limit_incident_key(connection_id: int) -> str:
    return f"crm_daily_limit:{connection_id}"


def _item_outcome(send: SendResult, email: str, row: CrmSyncItem, env: SyncEnv) -> tuple[str, str]:
    if send.fate is Fate.DONE:
        item = send.items.get(email) or ItemResult(ok=False, retryable=True,
                                                   error="the CRM's answer did not mention this contact")
        if item.ok:
            row.crm_id = item.crm_id or row.crm_id
            return LogOutcome.SYNCED, ""
        return (LogOutcome.RETRY if item.retryable else LogOutcome.FAILED), item.error
    if send.fate is Fate.PERMANENT:
        return LogOutcome.FAILED, send.message
    return (LogOutcome.RATE_LIMITED if send.fate is Fate.RATE_LIMITED else LogOutcome.RETRY), send.message


def _record(conn: CrmConnection, token: str, rows: list[CrmSyncItem], outcomes: dict[int, tuple[str, str]],
            sends: dict[int, SendResult], env: SyncEnv, result: BatchResult) -> None:
    """Every claimed row's new state in one bulk UPDATE (only while still ours), plus its log entry.
    A batch that failed as a whole retries as a whole: one jittered delay per attempt number."""
    now = env.now()
    delays: dict[int, float] = {}
    logs: list[CrmSyncLog] = []
    done: list[CrmSyncItem] = []
    for row in rows:
        if row.pk not in outcomes:
            continue
        outcome, message = outcomes[row.pk]
        send = sends.get(row.pk)
        http_status = send.http_status if send else None
        row.claim_token, row.claimed_at = "", None
        if outcome in (LogOutcome.SYNCED, LogOutcome.UNCHANGED):
            row.status, row.synced_hash, row.synced_at, row.attempts, row.last_error, row.force = (
                SyncStatus.SYNCED, row.payload_hash, now if outcome == LogOutcome.SYNCED else row.synced_at, 0, "",
                False)
            row.next_attempt_at = None
            result.synced += outcome == LogOutcome.SYNCED
            result.unchanged += outcome == LogOutcome.UNCHANGED
        elif outcome == LogOutcome.RATE_LIMITED:
            row.status = SyncStatus.PENDING
            row.next_attempt_at = now + dt.timedelta(seconds=(send.retry_after if send and send.retry_after else 10))
            row.last_error = message
        elif outcome == LogOutcome.RETRY and row.attempts + 1 < MAX_ATTEMPTS:
            row.attempts += 1
            row.status, row.last_error = SyncStatus.PENDING, message
            delay = delays.setdefault(row.attempts, backoff_delay(row.attempts, rng=env.rng))
            row.next_attempt_at = now + dt.timedelta(seconds=delay)
            result.retrying += 1
        else:
            if outcome == LogOutcome.RETRY:
                row.attempts += 1
                message = f"gave up after {row.attempts} attempts: {message}"
                outcome = LogOutcome.FAILED
            row.status, row.last_error, row.next_attempt_at = SyncStatus.FAILED, message, None
            result.failed += 1
        result.outcomes.append(outcome)
        done.append(row)
        logs.append(CrmSyncLog(connection=conn, contact_id=row.contact_id, at=now, outcome=outcome,
                               http_status=None if outcome == LogOutcome.UNCHANGED else http_status,
                               attempt=row.attempts, message=message[:2000]))
    ids = [r.pk for r in done]
    with transaction.atomic():
        _write_outcomes(token, done)
        # Changed again while in flight: send once more (a fix to a rejected contact included).
        CrmSyncItem.objects.filter(pk__in=ids, dirty=True).exclude(status=SyncStatus.PENDING).update(
            status=SyncStatus.PENDING, dirty=False, attempts=0, next_attempt_at=now)
        CrmSyncItem.objects.filter(pk__in=ids, dirty=True).update(dirty=False)
        CrmSyncLog.objects.bulk_create(logs)


_OUTCOME_COLUMNS = [("id", "bigint"), ("status", "varchar"), ("synced_hash", "varchar"), ("payload_hash", "varchar"),
                    ("synced_at", "timestamptz"), ("attempts", "integer"), ("last_error", "text"),
                    ("force", "boolean"), ("next_attempt_at", "timestamptz"), ("crm_id", "varchar")]


def _write_outcomes(token: str, rows: list[CrmSyncItem]) -> int:
    """One UPDATE ... FROM (VALUES ...) for the whole batch, only on rows this batch still holds.
    (Django's bulk_update builds a CASE per field per row: 90 % of a batch's time at 100 rows.)"""
    if not rows:
        return 0
    ops = db_connection.ops
    postgres = db_connection.vendor == "postgresql"
    cell = "CAST(%s AS {})" if postgres else "%s"
    row_sql = "(" + ", ".join(cell.format(kind) for _, kind in _OUTCOME_COLUMNS) + ")"
    params: list[Any] = []
    for row in rows:
        params += [row.pk, row.status, row.synced_hash, row.payload_hash, ops.adapt_datetimefield_value(row.synced_at),
                   row.attempts, row.last_error, row.force, ops.adapt_datetimefield_value(row.next_attempt_at),
                   row.crm_id]
    table = CrmSyncItem._meta.db_table
    sets = ", ".join(f"{name} = v.column{n}" for n, (name, _) in enumerate(_OUTCOME_COLUMNS, start=1) if n > 1)
    sql = (f"UPDATE {table} SET {sets}, claim_token = '', claimed_at = NULL FROM (VALUES "  # noqa: S608
           f"{', '.join([row_sql] * len(rows))}) AS v WHERE {table}.id = v.column1 AND {table}.claim_token = %s"
           f" AND {table}.status = %s")
    with db_connection.cursor() as cursor:
        cursor.execute(sql, [*params, token, SyncStatus.SENDING])
        return int(cursor.rowcount)


def crm_sync_run(*, connection_id: int, env: SyncEnv | None = None, budget: float = RUN_SECONDS) -> int:
    """The `crm` job: send batches until nothing is due or the time budget is spent, then make sure
    a job comes back for what is left (now, or when the earliest retry is due). Returns contacts sent."""
    if switch_paused("crm_sync"):
        return 0  # held by ops' kill switch: rows stay pending; resuming (or the sweeper) re-offers them
    sync_job_started(connection_id=connection_id)
    _offer_companion(connection_id)
    deadline = time.monotonic() + budget
    sent = 0
    while time.monotonic() < deadline:
        with tracing.span("crm.batch", **{"leadflow.connection_id": connection_id}):
            batch = crm_sync_batch(connection_id=connection_id, env=env)
            tracing.set_attributes(items=batch.claimed, sent=batch.sent, synced=batch.synced, failed=batch.failed,
                                   retrying=batch.retrying, rate_limited=batch.rate_limited, requests=batch.requests)
        sent += batch.sent
        if not batch.claimed:
            break
    _schedule_next(connection_id)
    return sent


def _offer_companion(connection_id: int) -> None:
    """With a backlog, queue one more job for this connection: another worker (if there is one)
    works on it at the same time, both paced by the shared limit, so the limit rather than one
    worker's per-batch work sets the pace. With a single worker the extra job just waits its turn."""
    conn = CrmConnection.objects.filter(pk=connection_id).only("batch_size").first()
    if conn is None:
        return
    backlog = CrmSyncItem.objects.filter(connection_id=connection_id, status=SyncStatus.PENDING,
                                         next_attempt_at__lte=timezone.now())[: conn.batch_size * 2 + 1].count()
    if backlog > conn.batch_size * 2:
        _enqueue_now(connection_id, 0)


def _schedule_next(connection_id: int) -> None:
    now = timezone.now()
    nxt = CrmSyncItem.objects.filter(connection_id=connection_id, status=SyncStatus.PENDING).aggregate(
        at=Min("next_attempt_at"))["at"]
    paused_until = CrmConnection.objects.filter(pk=connection_id).values_list("paused_until", flat=True).first()
    if nxt is not None and paused_until is not None:
        nxt = max(nxt, paused_until)  # a daily pause: come back at the reset, not before
    if nxt is not None:
        _enqueue_now(connection_id, max(0.0, (nxt - now).total_seconds()))


def crm_sweep(*, now: dt.datetime | None = None) -> int:
    """Every minute: rows stuck in "sending" (worker killed) go back to pending; every connection
    with due rows gets a job (Redis may have lost it). Returns how many rows were released."""
    now = now or timezone.now()
    released = CrmSyncItem.objects.filter(status=SyncStatus.SENDING, claimed_at__lt=now - STALE_SENDING).update(
        status=SyncStatus.PENDING, claim_token="", claimed_at=None, next_attempt_at=now)
    due = CrmSyncItem.objects.filter(status=SyncStatus.PENDING, next_attempt_at__lte=now, connection__is_active=True
                                     ).exclude(connection__paused_until__gt=now)  # daily pause: its job comes back
    for connection_id in due.values_list("connection_id", flat=True).distinct().order_by():
        get_connection().delete(_queued_flag(connection_id))  # a job queued over a minute ago may be lost
        _enqueue_now(connection_id, 0.0)
    if released:
        log.warning("crm sweeper released %s rows whose worker stopped mid-send", released)
    return released


# --- Inbound --------------------------------------------------------------------------------------------

INBOUND_STATUSES = {"accepted", "rejected", "closed"}
MAX_INBOUND = 500


@dataclass
class InboundResult:
    accepted: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)


def inbound_source(conn: CrmConnection) -> str:
    return f"crm:{conn.name}"[:100]


def crm_inbound_status(*, connection: CrmConnection, items: Sequence[Any],
                       now: dt.datetime | None = None) -> InboundResult:
    """Sales status changes reported by the CRM become events `crm_accepted`, `crm_rejected` and
    `crm_closed` (source crm:<connection>, idempotent by the CRM's change id), processed by the
    event pipeline like API events (scoring rules, segments, workflow triggers)."""
    from contacts.ingest import ItemInvalid, clean_item, enqueue_processing

    if len(items) > MAX_INBOUND:
        raise ValueError(f"at most {MAX_INBOUND} changes per call")
    now = now or timezone.now()
    result = InboundResult()
    cleaned = []
    for index, item in enumerate(items):
        try:
            cleaned.append((index, *_clean_inbound(item, now=now, clean_item=clean_item)))
        except ItemInvalid as exc:
            result.errors.append({"index": index, "message": str(exc)})
    source = inbound_source(connection)
    cid = current_correlation_id()  # the CRM's webhook request
    with transaction.atomic():
        contacts = dict(Contact.objects.filter(email__in={c.email for _, c, _ in cleaned}).values_list("email", "pk"))
        keys = [key for _, _, key in cleaned]
        seen = set(Event.objects.filter(source=source, idempotency_key__in=keys).values_list(
            "idempotency_key", flat=True))
        fresh: list[Event] = []
        for index, clean, key in cleaned:
            if clean.email not in contacts:
                result.errors.append({"index": index, "message": "email: no contact with this email"})
            elif key in seen:
                result.duplicates += 1
            else:
                seen.add(key)
                fresh.append(Event(contact_id=contacts[clean.email], event_type=clean.event_type,
                                   properties=clean.properties, occurred_at=clean.occurred_at, source=source,
                                   idempotency_key=key, correlation_id=cid))
        Event.objects.bulk_create(fresh, ignore_conflicts=True)
        result.event_ids = sorted(Event.objects.filter(
            source=source, idempotency_key__in=[e.idempotency_key for e in fresh]).values_list("pk", flat=True))
        result.accepted = len(result.event_ids)
        CrmSyncLog.objects.bulk_create([
            CrmSyncLog(connection=connection, contact_id=e.contact_id, at=now, outcome=LogOutcome.INBOUND,
                       message=f"{e.event_type}: {e.properties.get('reason', '')}"[:2000]) for e in fresh])
        enqueue_processing(event_ids=result.event_ids, correlation_id=cid)
    result.errors.sort(key=lambda e: e["index"])
    return result


def _clean_inbound(item: Any, *, now: dt.datetime, clean_item: Callable[..., Any]) -> tuple[Any, str]:
    """Validated like an API event (same rules, same messages), then shaped as a CRM status event."""
    from contacts.ingest import ItemInvalid, unstorable

    if not isinstance(item, dict):
        raise ItemInvalid("must be an object")
    unknown = set(item) - {"email", "status", "occurred_at", "id", "reason", "outcome"}
    if unknown:
        raise ItemInvalid(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    status = item.get("status")
    if not isinstance(status, str) or status not in INBOUND_STATUSES:  # a list or object is unhashable
        raise ItemInvalid(f"status: one of {', '.join(sorted(INBOUND_STATUSES))}")
    properties = {"status": status}
    for name in ("reason", "outcome"):
        if item.get(name) is not None:
            if not isinstance(item[name], str) or len(item[name]) > 500:
                raise ItemInvalid(f"{name}: a string of at most 500 characters")
            properties[name] = item[name]
    change_id = item.get("id")
    if change_id is not None and (not isinstance(change_id, str | int) or not 1 <= len(str(change_id)) <= 150):
        raise ItemInvalid("id: a string of 1-150 characters (the CRM's id for this change)")
    problem = unstorable(str(change_id), "id") if change_id is not None else None  # it becomes the key
    if problem:
        raise ItemInvalid(problem)
    clean = clean_item(0, {"email": item.get("email"), "type": f"crm_{status}", "properties": properties,
                           "occurred_at": item.get("occurred_at")}, now=now)
    if change_id is not None:
        key = f"change:{change_id}"
    else:
        basis = f"{clean.email}|{status}|{clean.occurred_at.isoformat()}"
        key = "derived:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:40]
    return clean, key
