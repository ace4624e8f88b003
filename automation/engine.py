"""The step runner ("Advance" in DESIGN.md): runs enrollments' steps, wakes due ones, sends webhooks.

- enrollments_advance(ids): batches of ADVANCE_BATCH enrollments, one transaction each. Those at
  the same version and step move together, set-based, where the step allows it (a wait that is
  over, a fixed wait starting, send_email, branch, the end); the rest run one by one
  (enrollment_advance) until a wait, the end, an exit or a failure. Effects are rows in that
  transaction (Message, CRM sync row, WebhookDelivery), so a killed worker leaves nothing half done.
- A step runs once per visit: its StepRun key `enrollment:step:seq` is unique; a repeated job
  finds the row succeeded and moves on. Retries of a failed attempt reuse the row and its key.
- enrollments_wake(): the scheduler's tick. Claims due waiting enrollments (and active ones whose
  lease ran out) in batches with SKIP LOCKED and enqueues advance jobs with ids.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Func, JSONField, Value
from django.db.models.functions import Cast
from django.utils import timezone
from rq import get_current_job

from automation import definition as d
from automation.models import (
    LIVE_STATUSES,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    StepRun,
    StepRunStatus,
    WebhookDelivery,
)
from contacts.models import Contact, Event, SegmentMembership, contact_scores_set, with_contact_scores
from core import tracing
from core.logs import correlation_scope, rows_extra
from core.queues import get_queue
from core.webhooks import signed_headers

log = logging.getLogger(__name__)

QUEUE = "default"
ADVANCE_JOB = "automation.tasks.enrollments_advance"
WEBHOOK_JOB = "automation.tasks.webhook_deliver"
LEASE = dt.timedelta(seconds=120)  # an active enrollment untouched this long lost its job
JOB_CHUNK = 200  # enrollment ids per advance job (triggers: small batches start at once)
WAKE_JOB_CHUNK = 1000  # per advance job from the wake tick (many due at once: fewer, bigger jobs)
ADVANCE_BATCH = 1000  # enrollments per transaction of an advance job
JOB_SECONDS = 20.0  # an advance job re-enqueues what it has not reached after this long
WAKE_BATCH = 1000  # rows claimed per statement by the scheduler tick
WAKE_LIMIT = 50_000  # per tick (every 5 s); the next tick takes the rest
MAX_STEPS_PER_RUN = 200  # validation forbids cycles without a wait; this guards old data anyway
MAX_ATTEMPTS = 3
RETRY_BASE = dt.timedelta(seconds=60)
WEBHOOK_MAX_ATTEMPTS = 6
WEBHOOK_TIMEOUT = 10


class StepError(Exception):
    """A step cannot succeed as defined (template gone, no staging recipient): no retry."""


@dataclass
class StepResult:
    data: dict[str, Any] = field(default_factory=dict)
    next: str | None = None  # None: the step's default next
    wait_until: dt.datetime | None = None
    exit: bool = False


@dataclass
class Ctx:
    enrollment: Enrollment
    step: dict[str, Any]
    key: str  # the StepRun's idempotency key; effects derive their keys from it
    now: dt.datetime
    run: StepRun | None = None

    @property
    def contact(self) -> Contact:
        return self.enrollment.contact


# --- Enqueueing -----------------------------------------------------------------------------------


def enqueue_advance(*, enrollment_ids: Sequence[int], chunk: int = JOB_CHUNK) -> None:
    """One job per chunk; inside a transaction the jobs leave after COMMIT (django-rq)."""
    queue = get_queue(QUEUE)
    ids = list(enrollment_ids)
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        queue.enqueue(ADVANCE_JOB, part, job_id=f"wf-advance-{part[0]}-{uuid.uuid4().hex[:12]}")


def advance_after_commit(*, enrollment_ids: Sequence[int]) -> None:
    """New enrollments' first steps. Inside a worker's job (the event pipeline) they run in this
    process right after COMMIT: no second job to wait for behind the busier queues. Elsewhere (a
    web request, an admin action) they go to advance jobs. Either way, a crash before they ran
    leaves them active with a lease, and the wake tick re-queues them when it runs out (LEASE).

    One events batch may hold a burst (a webinar platform's 500 registrations) and a few signups
    that arrived meanwhile: enrollments of small causes (SMALL_CAUSE or fewer per correlation id)
    run first, in a transaction of their own, so their emails are queued before the burst's; a
    burst bigger than one batch goes to jobs of JOB_CHUNK, between which the worker's other
    queues (delivery) take turns, so its first emails leave while the rest still advance."""
    ids = list(enrollment_ids)
    if not ids:
        return
    if get_current_job() is None:
        enqueue_advance(enrollment_ids=ids)
        return
    small, big = _split_by_cause(ids)
    if len(small) > ADVANCE_BATCH:  # thousands of single signups in one batch: a backlog, not a burst
        enqueue_advance(enrollment_ids=small[ADVANCE_BATCH:])
        small = small[:ADVANCE_BATCH]
    if len(big) > ADVANCE_BATCH:
        enqueue_advance(enrollment_ids=big)
        big = []
    transaction.on_commit(lambda: _advance_now([small, big]))


SMALL_CAUSE = 50  # enrollments one cause (correlation id: a request, a job) made; more is a burst


def _split_by_cause(ids: list[int]) -> tuple[list[int], list[int]]:
    """(enrollments of small causes, the rest), each in id order; one query, none for a small batch."""
    if len(ids) <= SMALL_CAUSE:
        return ids, []
    causes: dict[str, list[int]] = {}
    for pk, cause in Enrollment.objects.filter(pk__in=ids).order_by("pk").values_list("pk", "correlation_id"):
        causes.setdefault(cause or f"#{pk}", []).append(pk)  # no cause recorded: on its own
    small = sorted(pk for group in causes.values() if len(group) <= SMALL_CAUSE for pk in group)
    big = sorted(pk for group in causes.values() if len(group) > SMALL_CAUSE for pk in group)
    return small, big


def _advance_now(batches: list[list[int]]) -> None:
    for ids in batches:
        if not ids:
            continue
        try:
            enrollments_advance(enrollment_ids=ids)
        except Exception:  # noqa: BLE001  a job retries them now; the lease would, later
            log.warning("advancing %s new enrollments failed; queued as a job", len(ids), exc_info=True)
            enqueue_advance(enrollment_ids=ids)


# --- Advancing --------------------------------------------------------------------------------------


def enrollments_advance(*, enrollment_ids: Sequence[int], now: dt.datetime | None = None,
                        budget: float = JOB_SECONDS) -> int:
    """Advance the enrollments as far as they can go now, ADVANCE_BATCH per transaction (see
    `_advance_batch`); re-enqueue what is left after `budget` seconds. Returns how many it took on."""
    started = time.monotonic()
    ids = list(dict.fromkeys(enrollment_ids))  # a repeated id is one enrollment
    for start in range(0, len(ids), ADVANCE_BATCH):
        if start and time.monotonic() - started > budget:
            enqueue_advance(enrollment_ids=ids[start:], chunk=WAKE_JOB_CHUNK)
            return start
        _advance_batch(ids[start:start + ADVANCE_BATCH], now or timezone.now())
    return len(ids)


def _advance_batch(ids: list[int], now: dt.datetime) -> None:
    """One transaction for a batch: lock the live enrollments (SKIP LOCKED: another worker's are
    its own), move those at the same step set-based as far as set-based steps go (a due wait's
    end, a fixed wait's start, send_email, branch, the end), write them in one statement, and run
    whatever is left (other step types, paused workflows) through `enrollment_advance`, one
    savepoint each."""
    with transaction.atomic():
        qs = Enrollment.objects.select_related("version", "workflow").filter(pk__in=ids, status__in=LIVE_STATUSES)
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        runnable: list[Enrollment] = []
        slow: list[Enrollment] = []
        for e in qs:
            if e.status == EnrollmentStatus.WAITING and e.next_run_at and e.next_run_at > now:
                continue  # not due: a duplicate job
            (slow if e.workflow.paused else runnable).append(e)
        seq_before = {e.pk: e.seq for e in runnable}
        with tracing.batch("workflow.advance", (e.correlation_id for e in runnable + slow),
                           enrollments=len(runnable) + len(slow)):
            changed, leftovers = _run_set_based(runnable, now)
            _write_moves(changed, seq_before, now)
            if changed:
                log.info("enrollments advanced", extra=rows_extra("enrollment_ids",
                                                                  ((e.pk, e.correlation_id) for e in changed)))
            for e in slow + leftovers:
                enrollment_advance(enrollment_id=e.pk, now=now)


def _write_moves(changed: list[Enrollment], seq_before: dict[int, int], now: dt.datetime) -> None:
    """One UPDATE per distinct (position before, outcome) (enrollments woken together mostly share
    one), not per row. Each is a conditional claim: the rows must still be where this batch read
    them (PostgreSQL's row locks make that certain; on SQLite a concurrent runner may have moved
    them, and then the whole batch is undone)."""
    outcomes: dict[tuple[Any, ...], list[int]] = {}
    for e in changed:
        outcome = (seq_before[e.pk], e.status, e.step_id, e.seq, e.next_run_at, e.finished_at)
        outcomes.setdefault(outcome, []).append(e.pk)
    for (before, status, step_id, seq, next_run_at, finished_at), pks in outcomes.items():
        moved = Enrollment.objects.filter(pk__in=pks, seq=before, status__in=LIVE_STATUSES).update(
            status=status, step_id=step_id, seq=seq, next_run_at=next_run_at, finished_at=finished_at, updated_at=now)
        if moved != len(pks):
            raise IntegrityError("enrollments moved under a locked advance batch")


def _run_set_based(enrollments: list[Enrollment], now: dt.datetime) -> tuple[list[Enrollment], list[Enrollment]]:
    """Advance groups of enrollments at the same version and step with one query per step (not
    per enrollment). Returns (the enrollments it moved, in memory; those it could not take
    further: at a step without a set-based runner, or whose StepRun needs the one-by-one path)."""
    changed: dict[int, Enrollment] = {}
    leftovers: list[Enrollment] = []
    pending = enrollments
    for _ in range(MAX_STEPS_PER_RUN):
        if not pending:
            break
        groups: dict[tuple[int, str], list[Enrollment]] = {}
        for e in pending:
            groups.setdefault((e.version_id, e.step_id), []).append(e)
        pending = []
        for (_, step_id), group in groups.items():
            steps = group[0].version.steps
            index = d.step_map(steps)
            if step_id not in index:  # "end", or a step the version does not have
                for e in group:
                    _set_state(e, EnrollmentStatus.COMPLETED, finished_at=now)
                    e.updated_at, changed[e.pk] = now, e
                continue
            step = steps[index[step_id]]
            runner = SET_RUNNERS.get(str(step.get("type")))
            with tracing.span("workflow.step", step_type=str(step.get("type")), enrollments=len(group), set_based=True):
                moved, rest = runner(group, step, d.default_next(steps, index[step_id]), now) if runner else ([], group)
            leftovers += rest
            for e, target in moved:
                if target is None:  # the runner parked it (a new wait): its state is set, it goes no further now
                    e.updated_at, changed[e.pk] = now, e
                    continue
                e.step_id, e.seq, e.status = target, e.seq + 1, EnrollmentStatus.ACTIVE
                e.next_run_at, e.updated_at, changed[e.pk] = now + LEASE, now, e
                pending.append(e)
    leftovers += pending  # a very long run: the one-by-one path yields it to the wake
    return list(changed.values()), leftovers


def _key(e: Enrollment) -> str:
    return f"{e.pk}:{e.step_id}:{e.seq}"


def _set_wait_over(group: list[Enrollment], step: dict[str, Any], default_next: str,
                   now: dt.datetime) -> tuple[list[tuple[Enrollment, str | None]], list[Enrollment]]:
    """Waits that are over: their StepRuns succeed in one statement. New waits of a fixed length
    (`duration`, `until`: the same end for the whole group) start in one INSERT (`_set_wait_start`);
    window waits (they depend on each contact's time zone) and anything unusual go the one-by-one way."""
    by_key = {_key(e): e for e in group}
    runs = {r.idempotency_key: r for r in StepRun.objects.filter(idempotency_key__in=list(by_key))}
    moved: list[tuple[Enrollment, str | None]] = []
    rest, done, new = [], [], {}
    for key, e in by_key.items():
        run = runs.get(key)
        if run is None:
            new[key] = e
            continue
        if run.status != StepRunStatus.WAITING or dt.datetime.fromisoformat(run.result["until"]) > now:
            rest.append(e)
            continue
        done.append(run.pk)
        moved.append((e, default_next))
    if done:
        # The current version's next, not the stored one: a migrated enrollment follows its new version.
        merged = _json_merge(F("result"), {"next": default_next})
        claimed = StepRun.objects.filter(pk__in=done, status=StepRunStatus.WAITING).update(
            status=StepRunStatus.SUCCEEDED, finished_at=now, result=merged)
        if claimed != len(done):  # another runner finished some meanwhile (SQLite has no row locks)
            raise IntegrityError("wait step runs changed under a locked batch")
    started, one_by_one = _set_wait_start(new, step, default_next, now)
    return moved + [(e, None) for e in started], rest + one_by_one


def _set_wait_start(fresh: dict[str, Enrollment], step: dict[str, Any], default_next: str,
                    now: dt.datetime) -> tuple[list[Enrollment], list[Enrollment]]:
    """Start a fixed-length wait for many enrollments (a welcome email, then "wait 2 days"): their
    StepRuns in one INSERT (ignore_conflicts, then read back: only rows this call created count),
    each enrollment set WAITING until the end (written by the batch's UPDATE). The one-by-one path
    (`_wait`) writes the same rows, one enrollment at a time. Returns (started, the rest)."""
    if not fresh or not ("duration" in step or "until" in step):
        return [], list(fresh.values())
    until = wait_until(step, contact=None, workflow_tz="UTC", now=now)
    if until <= now:
        return [], list(fresh.values())  # already over: the one-by-one path moves on at once
    StepRun.objects.bulk_create([
        StepRun(enrollment=e, version_id=e.version_id, step_id=e.step_id, step_type="wait", idempotency_key=k,
                started_at=now, status=StepRunStatus.WAITING, correlation_id=e.correlation_id,
                result={"until": until.isoformat(), "next": default_next})
        for k, e in fresh.items()], ignore_conflicts=True, batch_size=ADVANCE_BATCH)
    ours = set(StepRun.objects.filter(idempotency_key__in=list(fresh), started_at=now, status=StepRunStatus.WAITING)
               .values_list("idempotency_key", flat=True))
    for k in ours:
        _set_state(fresh[k], EnrollmentStatus.WAITING, next_run_at=until)
    return [fresh[k] for k in ours], [e for k, e in fresh.items() if k not in ours]


def _json_merge(column: F, data: dict[str, Any]) -> Func:
    """`column` with the keys of `data` set, in SQL (PostgreSQL `||`, SQLite `json_patch`)."""
    value = Value(json.dumps(data))
    if connection.vendor == "postgresql":
        return Func(column, Cast(value, JSONField()), template="(%(expressions)s)", arg_joiner=" || ",
                    output_field=JSONField())
    return Func(column, value, function="json_patch", output_field=JSONField())


def _set_send_email(group: list[Enrollment], step: dict[str, Any], default_next: str,
                    now: dt.datetime) -> tuple[list[tuple[Enrollment, str]], list[Enrollment]]:
    """send_email for many enrollments: their StepRuns in one INSERT (ignore_conflicts, then read
    back: only rows this call created run), their messages in one `messages_queue` call, the
    StepRuns' results in one UPDATE; all in a savepoint. Errors, missing templates or senders and
    StepRuns that already exist go the one-by-one way (which fails, retries or skips them)."""
    from campaigns.models import Message
    from campaigns.services import NoSender, QueueItem, messages_queue, sender_default

    revision = pinned_revision(group[0].version_id, step.get("template"))
    try:
        sender = sender_default()
    except NoSender:
        return [], group
    if revision is None:
        return [], group
    redirect = staging_recipient(sender)
    by_key = {_key(e): e for e in group if redirect or not e.is_staging}
    rest = [e for e in group if not (redirect or not e.is_staging)]
    existing = set(StepRun.objects.filter(idempotency_key__in=list(by_key)).values_list("idempotency_key", flat=True))
    rest += [e for k, e in by_key.items() if k in existing]
    fresh = {k: e for k, e in by_key.items() if k not in existing}
    if not fresh:
        return [], rest
    wf = group[0].workflow
    try:
        with transaction.atomic():
            # The messages' keys derive from the step runs' keys, so they are known before the rows.
            messages_queue(template=revision.template, revision=revision, sender=sender,
                           source=f"workflow:{wf.key}"[:100], items=[
                QueueItem(e.contact_id, f"wf:{k}", {"workflow": wf.key, "step": step["id"]},
                          redirect if e.is_staging else "", e.correlation_id) for k, e in fresh.items()])
            message_ids = dict(Message.objects.filter(idempotency_key__in=[f"wf:{k}" for k in fresh])
                               .values_list("idempotency_key", "id"))
            StepRun.objects.bulk_create([
                StepRun(enrollment=e, version_id=e.version_id, step_id=e.step_id, step_type="send_email",
                        idempotency_key=k, started_at=now, finished_at=now, status=StepRunStatus.SUCCEEDED,
                        correlation_id=e.correlation_id,
                        result={"message_id": message_ids.get(f"wf:{k}"), "redirect_to": redirect if e.is_staging
                                else "", "next": default_next, "exit": False})
                for k, e in fresh.items()], ignore_conflicts=True, batch_size=ADVANCE_BATCH)
            # Checked: only the rows this call inserted count (a conflicting row is someone else's
            # visit; its message has the same key, so it was not queued twice).
            ours = set(StepRun.objects.filter(idempotency_key__in=list(fresh), started_at=now,
                                              status=StepRunStatus.SUCCEEDED).values_list("idempotency_key", flat=True))
    except Exception:  # noqa: BLE001  the one-by-one path records, retries or fails each step
        log.warning("set-based send_email of %s enrollments failed; running them one by one", len(fresh),
                    exc_info=True, extra=rows_extra("enrollment_ids", ((e.pk, e.correlation_id)
                                                                        for e in fresh.values())))
        return [], rest + list(fresh.values())
    return [(fresh[k], default_next) for k in ours], rest + [e for k, e in fresh.items() if k not in ours]


def _set_branch(group: list[Enrollment], step: dict[str, Any], default_next: str,
                now: dt.datetime) -> tuple[list[tuple[Enrollment, str | None]], list[Enrollment]]:
    """A branch for many enrollments (the webinar's "attended?" two days after a burst): the
    condition for all of them in one or two queries (`conditions_hold`), their StepRuns in one
    INSERT (ignore_conflicts, then read back: only rows this call created move), each enrollment
    to `then` or `else`. StepRuns that already exist, and conditions without a set-based
    evaluation, go the one-by-one way (`_branch`, which records the same result)."""
    by_key = {_key(e): e for e in group}
    existing = set(StepRun.objects.filter(idempotency_key__in=list(by_key)).values_list("idempotency_key", flat=True))
    fresh = {k: e for k, e in by_key.items() if k not in existing}
    rest = [e for k, e in by_key.items() if k in existing]
    if not fresh:
        return [], rest
    # In a savepoint, any error sending the group the one-by-one way (as `_set_send_email` does):
    # an error here would otherwise undo the whole batch, and every wake would rebuild it.
    try:
        with transaction.atomic():
            matched = conditions_hold(step["if"], list(fresh.values()), now)
            if matched is None:
                return [], rest + list(fresh.values())
            target = {k: str(step["then" if matched[e.pk] else "else"]) for k, e in fresh.items()}
            StepRun.objects.bulk_create([
                StepRun(enrollment=e, version_id=e.version_id, step_id=e.step_id, step_type="branch",
                        idempotency_key=k, started_at=now, finished_at=now, status=StepRunStatus.SUCCEEDED,
                        correlation_id=e.correlation_id, result={"matched": matched[e.pk], "next": target[k],
                                                                 "exit": False})
                for k, e in fresh.items()], ignore_conflicts=True, batch_size=ADVANCE_BATCH)
            ours = set(StepRun.objects.filter(idempotency_key__in=list(fresh), started_at=now,
                                              status=StepRunStatus.SUCCEEDED).values_list("idempotency_key", flat=True))
    except Exception:  # noqa: BLE001  a malformed condition or a database error: the one-by-one path
        # fails (or retries) each step with its reason
        log.warning("set-based branch of %s enrollments failed; running them one by one", len(fresh),
                    exc_info=True, extra=rows_extra("enrollment_ids", ((e.pk, e.correlation_id)
                                                                        for e in fresh.values())))
        return [], rest + list(fresh.values())
    moved: list[tuple[Enrollment, str | None]] = [(fresh[k], target[k]) for k in ours]
    return moved, rest + [e for k, e in fresh.items() if k not in ours]


def conditions_hold(cond: dict[str, Any], enrollments: list[Enrollment], now: dt.datetime) -> dict[int, bool] | None:
    """`condition_holds` for many enrollments at once: enrollment id -> matched, in one or two
    queries whatever their number; None for a condition it does not evaluate set-based."""
    from campaigns.models import Message

    cids = {e.contact_id for e in enrollments}
    holds: set[int]  # contact ids (or, for email conditions, enrollment ids) for which it holds
    if "segment" in cond:
        seg = cond["segment"]
        by_id = isinstance(seg, int) or str(seg).isdigit()
        holds = set(SegmentMembership.objects.filter(
            contact_id__in=cids, **({"segment_id": int(seg)} if by_id else {"segment__name": seg}))
            .values_list("contact_id", flat=True))
    elif "event" in cond:
        events = Event.objects.filter(contact_id__in=cids, event_type=cond["event"])
        if "within" in cond:
            events = events.filter(occurred_at__gte=now - d.parse_duration(cond["within"]))
        for prop, value in (cond.get("where") or {}).items():
            events = events.filter(**{f"properties__{prop}": value})
        holds = set(events.values_list("contact_id", flat=True).distinct())
    elif "field" in cond or "score_above" in cond:
        contacts = {c.pk: c for c in Contact.objects.with_scores().filter(pk__in=cids)}
        holds = {pk for pk, c in contacts.items() if (
            _compare(_field_value(c, str(cond["field"])), cond.get("op", "eq"), cond.get("value"))
            if "field" in cond else c.score > int(cond["score_above"]))}
    elif "email" in cond:
        runs = StepRun.objects.filter(enrollment__in=[e.pk for e in enrollments], step_type="send_email")
        if cond.get("step"):
            runs = runs.filter(step_id=cond["step"])
        owner = {r["message_id"]: enrollment_id for enrollment_id, r in runs.values_list("enrollment_id", "result")
                 if r.get("message_id")}
        column = "opened_at" if cond["email"] == "opened" else "clicked_at"
        messages = Message.objects.filter(pk__in=list(owner), **{f"{column}__isnull": False})
        if "within" in cond:
            messages = messages.filter(**{f"{column}__gte": now - d.parse_duration(cond["within"])})
        holds = {owner[m] for m in messages.values_list("pk", flat=True)}
        return {e.pk: e.pk in holds for e in enrollments}
    else:
        return None
    return {e.pk: e.contact_id in holds for e in enrollments}


# A runner returns (moved: (enrollment, next step id, or None when it parked the enrollment with
# its state set, as a new wait does), the rest for the one-by-one path).
SetRunner = Callable[[list[Enrollment], dict[str, Any], str, dt.datetime],
                     tuple[Sequence[tuple[Enrollment, str | None]], list[Enrollment]]]
SET_RUNNERS: dict[str, SetRunner] = {"wait": _set_wait_over, "send_email": _set_send_email, "branch": _set_branch}


def enrollment_advance(*, enrollment_id: int, now: dt.datetime | None = None) -> str | None:
    """Run one enrollment's steps from where it stands; returns its status afterwards (None if it
    is not live or another worker holds it)."""
    now = now or timezone.now()
    with transaction.atomic():
        qs = with_contact_scores(Enrollment.objects.select_related("version", "workflow", "contact").filter(
            pk=enrollment_id, status__in=LIVE_STATUSES))
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        enrollment = qs.first()
        if enrollment is None:
            return None
        contact_scores_set([enrollment])  # branch conditions and payloads read them
        if enrollment.status == EnrollmentStatus.WAITING and enrollment.next_run_at and enrollment.next_run_at > now:
            return enrollment.status  # not due: a duplicate job
        before = (enrollment.status, enrollment.seq, enrollment.step_id)
        if enrollment.workflow.paused:
            _set_state(enrollment, EnrollmentStatus.WAITING, next_run_at=now)  # held; the wake skips paused
        else:
            # Its lines, and rows its steps write for the contact (CRM rows, segment events), carry its id.
            with correlation_scope(enrollment.correlation_id):
                _run_steps(enrollment, now)
        claimed = Enrollment.objects.filter(pk=enrollment.pk, status=before[0], seq=before[1],
                                            step_id=before[2]).update(
            status=enrollment.status, step_id=enrollment.step_id, seq=enrollment.seq,
            next_run_at=enrollment.next_run_at, finished_at=enrollment.finished_at, updated_at=now)
        if claimed != 1:  # another runner moved it first (SQLite has no row locks): undo ours
            transaction.set_rollback(True)
            return None
        return enrollment.status


def _set_state(e: Enrollment, status: str, *, next_run_at: dt.datetime | None = None,
               finished_at: dt.datetime | None = None) -> None:
    e.status, e.next_run_at, e.finished_at = status, next_run_at, finished_at


def _run_steps(e: Enrollment, now: dt.datetime) -> None:
    steps = e.version.steps
    index = d.step_map(steps)
    for _ in range(MAX_STEPS_PER_RUN):
        if e.step_id not in index:  # "end", or a step the version does not have
            _set_state(e, EnrollmentStatus.COMPLETED, finished_at=now)
            return
        step = steps[index[e.step_id]]
        outcome, value = _run_step(e, step, d.default_next(steps, index[e.step_id]), now)
        if outcome == "next":
            e.step_id, e.seq = str(value), e.seq + 1
            e.status = EnrollmentStatus.ACTIVE
        elif outcome == "wait":
            _set_state(e, EnrollmentStatus.WAITING, next_run_at=value)
            return
        elif outcome == "exit":
            _set_state(e, EnrollmentStatus.EXITED, finished_at=now)
            return
        else:
            _set_state(e, EnrollmentStatus.FAILED, finished_at=now)
            return
    _set_state(e, EnrollmentStatus.WAITING, next_run_at=now)  # a very long run yields; the wake continues it


def _run_step(e: Enrollment, step: dict[str, Any], default_next: str, now: dt.datetime) -> tuple[str, Any]:
    key = f"{e.pk}:{e.step_id}:{e.seq}"
    run = StepRun.objects.filter(idempotency_key=key).first()
    if run is None:
        try:
            with transaction.atomic():
                run = StepRun.objects.create(enrollment=e, version=e.version, step_id=e.step_id,
                                             step_type=str(step.get("type")), idempotency_key=key, started_at=now,
                                             correlation_id=e.correlation_id)
        except IntegrityError:
            run = StepRun.objects.get(idempotency_key=key)
    if run.status == StepRunStatus.SUCCEEDED:  # done by an earlier run of this job
        return ("exit", None) if run.result.get("exit") else ("next", run.result.get("next") or default_next)
    if run.status == StepRunStatus.FAILED:
        return "failed", None
    if run.status == StepRunStatus.WAITING:
        until = dt.datetime.fromisoformat(run.result["until"])
        if until > now:
            return "wait", until
        # The current version's next, not the stored one: a migrated enrollment follows its new version.
        _finish(run, StepRunStatus.SUCCEEDED, now, data={**run.result, "next": default_next})
        return "next", default_next
    if run.status == StepRunStatus.RETRYING:
        run.attempt += 1
    return _execute(Ctx(e, step, key, now, run), run, default_next)


def _execute(ctx: Ctx, run: StepRun, default_next: str) -> tuple[str, Any]:
    handler = HANDLERS.get(str(ctx.step.get("type")))
    try:
        with transaction.atomic():  # a savepoint: a failing step leaves none of its effects
            if handler is None:
                raise StepError(f"unknown step type {ctx.step.get('type')!r}")
            with tracing.cause_span("workflow.step", ctx.enrollment.correlation_id, step_type=str(ctx.step.get("type")),
                                    enrollment_id=ctx.enrollment.pk, attempt=run.attempt):
                result = handler(ctx)
    except (StepError, ValidationError) as exc:
        _finish(run, StepRunStatus.FAILED, ctx.now, error=_message(exc))
        return "failed", None
    except Exception as exc:  # noqa: BLE001  any other error is retried, then fails visibly
        log.warning("workflow step %s failed (attempt %s): %s", run.idempotency_key, run.attempt, exc,
                    extra={"enrollment_id": ctx.enrollment.pk, "step_run_id": run.pk})
        if run.attempt >= MAX_ATTEMPTS:
            _finish(run, StepRunStatus.FAILED, ctx.now, error=_message(exc))
            return "failed", None
        _finish(run, StepRunStatus.RETRYING, ctx.now, error=_message(exc), done=False)
        return "wait", ctx.now + retry_delay(run.attempt)
    target = result.next or default_next
    if result.wait_until is not None and result.wait_until > ctx.now:
        _finish(run, StepRunStatus.WAITING, ctx.now, done=False,
                data={**result.data, "until": result.wait_until.isoformat(), "next": target})
        return "wait", result.wait_until
    _finish(run, StepRunStatus.SUCCEEDED, ctx.now, data={**result.data, "next": target, "exit": result.exit})
    return ("exit", None) if result.exit else ("next", target)


def _message(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)[:2000]
    return f"{type(exc).__name__}: {exc}"[:2000]


def _finish(run: StepRun, status: str, now: dt.datetime, *, error: str = "", done: bool = True,
            data: dict[str, Any] | None = None) -> None:
    run.status, run.error = status, error
    if data:
        run.result = data
    run.finished_at = now if done else None
    run.save(update_fields=["status", "error", "result", "finished_at", "attempt"])


def retry_delay(attempt: int, *, base: dt.timedelta = RETRY_BASE) -> dt.timedelta:
    """Bounded exponential backoff with full jitter on the upper half."""
    ceiling = base.total_seconds() * 2 ** min(attempt - 1, 8)
    return dt.timedelta(seconds=ceiling / 2 + random.random() * ceiling / 2)  # noqa: S311  jitter, not crypto


# --- Step handlers (each runs inside the step's savepoint) --------------------------------------------


def pinned_revision(version_id: int, key: Any) -> Any:
    """The template revision a version sends for `key` (with its template), or None. Content is
    part of the version: never the template's current fields, which may be an unapproved draft."""
    from automation.models import TemplatePin

    pin = TemplatePin.objects.select_related("revision__template").filter(
        version_id=version_id, template__key=str(key)).first()
    return pin.revision if pin else None


def _send_email(ctx: Ctx) -> StepResult:
    from campaigns.services import NoSender, QueueItem, messages_queue, sender_default

    revision = pinned_revision(ctx.enrollment.version_id, ctx.step.get("template"))
    if revision is None:
        raise StepError(f"v{ctx.enrollment.version.number} pins no revision of template "
                        f"{ctx.step.get('template')!r} (template deleted, or a version made without pins)")
    try:
        sender = sender_default()
    except NoSender as exc:
        raise StepError(str(exc)) from exc
    redirect = staging_recipient(sender) if ctx.enrollment.is_staging else ""
    if ctx.enrollment.is_staging and not redirect:
        # Never fall back to the contact's own address: staging mail must not reach real inboxes.
        raise StepError("staging email needs a staging recipient (sender profile or WORKFLOW_STAGING_RECIPIENT)")
    wf = ctx.enrollment.workflow
    ids = messages_queue(template=revision.template, revision=revision, sender=sender,
                         source=f"workflow:{wf.key}"[:100], items=[
        QueueItem(ctx.contact.pk, f"wf:{ctx.key}", {"workflow": wf.key, "step": ctx.step["id"]}, redirect,
                  ctx.enrollment.correlation_id)])
    return StepResult({"message_id": ids[0] if ids else None, "redirect_to": redirect})


def staging_recipient(sender: Any) -> str:
    return str(sender.staging_recipient or getattr(settings, "WORKFLOW_STAGING_RECIPIENT", "") or "")


def _wait(ctx: Ctx) -> StepResult:
    return StepResult(wait_until=wait_until(ctx.step, contact=ctx.contact,
                                            workflow_tz=ctx.enrollment.workflow.timezone, now=ctx.now))


def wait_until(step: dict[str, Any], *, contact: Contact | None, workflow_tz: str, now: dt.datetime) -> dt.datetime:
    if "duration" in step:
        return now + d.parse_duration(step["duration"])
    if "until" in step:
        return d.parse_until(step["until"])
    tz_name = step.get("timezone", "contact")
    if tz_name == "contact":
        tz_name = str((contact.attributes or {}).get("timezone") or workflow_tz) if contact else workflow_tz
    elif tz_name == "workflow":
        tz_name = workflow_tz
    try:
        tz = d.zone(str(tz_name))
    except ValueError:
        tz = d.zone(workflow_tz)
    return d.window_next(step["window"], after=now, tz=tz)


def _branch(ctx: Ctx) -> StepResult:
    matched = condition_holds(ctx.step["if"], contact=ctx.contact, now=ctx.now, enrollment=ctx.enrollment)
    return StepResult({"matched": matched}, next=str(ctx.step["then" if matched else "else"]))


def condition_holds(cond: dict[str, Any], *, contact: Contact, now: dt.datetime,
                    enrollment: Enrollment | None = None) -> bool:
    """Evaluate a branch condition; read-only (the simulation uses it too)."""
    if "segment" in cond:
        seg = cond["segment"]
        memberships = SegmentMembership.objects.filter(contact=contact)
        by_id = isinstance(seg, int) or str(seg).isdigit()
        return memberships.filter(**({"segment_id": int(seg)} if by_id else {"segment__name": seg})).exists()
    if "field" in cond:
        return _compare(_field_value(contact, str(cond["field"])), cond.get("op", "eq"), cond.get("value"))
    if "event" in cond:
        events = Event.objects.filter(contact=contact, event_type=cond["event"])
        if "within" in cond:
            events = events.filter(occurred_at__gte=now - d.parse_duration(cond["within"]))
        for prop, value in (cond.get("where") or {}).items():
            events = events.filter(**{f"properties__{prop}": value})
        return events.exists()
    if "email" in cond:
        return _email_condition(cond, contact, now, enrollment)
    if "score_above" in cond:
        return contact.score > int(cond["score_above"])
    raise StepError(f"unknown condition {cond!r}")


def _field_value(contact: Contact, name: str) -> Any:
    if name.startswith("attributes."):
        return (contact.attributes or {}).get(name.split(".", 1)[1])
    return getattr(contact, name, None)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "exists":
        return actual not in (None, "")
    if op == "empty":
        return actual in (None, "")
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "in":
        return actual in (expected or [])
    if op == "contains":
        return isinstance(actual, str | list) and expected in actual
    try:
        return bool({"gt": actual > expected, "gte": actual >= expected, "lt": actual < expected,
                     "lte": actual <= expected}[op])
    except TypeError:
        return False


def _email_condition(cond: dict[str, Any], contact: Contact, now: dt.datetime, e: Enrollment | None) -> bool:
    from campaigns.models import Message

    column = "opened_at" if cond["email"] == "opened" else "clicked_at"
    if e is not None:  # this enrollment's emails (of one step, when named)
        runs = StepRun.objects.filter(enrollment=e, step_type="send_email")
        if cond.get("step"):
            runs = runs.filter(step_id=cond["step"])
        ids = [r["message_id"] for r in runs.values_list("result", flat=True) if r.get("message_id")]
        messages = Message.objects.filter(pk__in=ids)
    else:
        messages = Message.objects.filter(contact=contact)
    messages = messages.filter(**{f"{column}__isnull": False})
    if "within" in cond:
        messages = messages.filter(**{f"{column}__gte": now - d.parse_duration(cond["within"])})
    return messages.exists()


def _update_contact(ctx: Ctx) -> StepResult:
    from contacts.models import ContactList, Tag
    from contacts.pipeline import contacts_changed
    from contacts.services import contact_upsert

    contact, step = ctx.contact, ctx.step
    fields: dict[str, Any] = {}
    attributes = dict(contact.attributes or {})
    for name, value in (step.get("set") or {}).items():
        if name.startswith("attributes."):
            attributes[name.split(".", 1)[1]] = value
        else:
            fields[name] = value
    if attributes != (contact.attributes or {}):
        fields["attributes"] = attributes
    if fields:
        contact, _ = contact_upsert(email=contact.email, **fields)
    for name in step.get("add_tags") or []:
        contact.tags.add(Tag.objects.get_or_create(name=name)[0])
    contact.tags.remove(*Tag.objects.filter(name__in=step.get("remove_tags") or []))
    for name in step.get("add_lists") or []:
        contact.lists.add(ContactList.objects.get_or_create(name=name)[0])
    contact.lists.remove(*ContactList.objects.filter(name__in=step.get("remove_lists") or []))
    contacts_changed(contact_ids=[contact.pk])  # fit scoring, segments, CRM, as for any contact edit
    return StepResult({"set": sorted(fields)})


def _adjust_score(ctx: Ctx) -> StepResult:
    from scoring.models import ScoreEntry
    from scoring.services import scores_refresh

    wf = ctx.enrollment.workflow
    points = int(ctx.step["points"])
    reason = str(ctx.step.get("reason") or f"workflow {wf.key}, step {ctx.step['id']}")
    # A ledger row without a rule: the score stays explainable, and recomputes keep it (they
    # rebuild rule entries only).
    ScoreEntry.objects.create(contact=ctx.contact, rule=None, rule_name=f"workflow:{wf.key}"[:150], points=points,
                              reason=reason[:300], created_at=ctx.now)
    scores_refresh(contact_ids=[ctx.contact.pk], now=ctx.now)
    ctx.contact.scores_forget()  # later steps of this run (branches, payloads) see the new score
    return StepResult({"points": points})


def _contact_payload(contact: Contact) -> dict[str, Any]:
    return {"id": contact.pk, "email": contact.email, "first_name": contact.first_name,
            "last_name": contact.last_name, "company": contact.company, "score": contact.score,
            "grade": contact.grade, "lifecycle_stage": contact.lifecycle_stage}


def _delivery(ctx: Ctx, channel: str, target: str, payload: dict[str, Any], suffix: str) -> WebhookDelivery:
    """An outbox row for a webhook/email call; staging never calls real endpoints (dry run)."""
    staging = ctx.enrollment.is_staging
    status = DeliveryStatus.PENDING
    if staging and channel == WebhookDelivery.Channel.WEBHOOK:
        status = DeliveryStatus.DRY_RUN
    elif staging:
        target = staging_recipient_any()
        status = DeliveryStatus.PENDING if target else DeliveryStatus.DRY_RUN
    row, created = WebhookDelivery.objects.get_or_create(
        idempotency_key=f"wf:{ctx.key}:{suffix}",
        defaults={"step_run": ctx.run, "contact": ctx.contact, "channel": channel, "target": target[:500],
                  "payload": payload, "status": status, "next_attempt_at": ctx.now})
    if created and status == DeliveryStatus.PENDING:
        cid = ctx.enrollment.correlation_id
        get_queue(QUEUE).enqueue(WEBHOOK_JOB, row.pk, job_id=f"wf-webhook-{row.pk}-1",
                                 meta={"correlation_id": cid} if cid else None)
    return row


def staging_recipient_any() -> str:
    from campaigns.models import SenderProfile

    sender = SenderProfile.objects.filter(is_default=True).first() or SenderProfile.objects.order_by("id").first()
    return staging_recipient(sender) if sender else str(getattr(settings, "WORKFLOW_STAGING_RECIPIENT", "") or "")


def _notify_sales(ctx: Ctx) -> StepResult:
    wf, contact = ctx.enrollment.workflow, ctx.contact
    payload = {"event": "workflow.notify_sales", "workflow": wf.key, "step": ctx.step["id"],
               "message": str(ctx.step.get("message") or f"{contact.email} reached {ctx.step['id']} in {wf.name}"),
               "contact": _contact_payload(contact)}
    made: dict[str, Any] = {}
    email = ctx.step.get("email")
    if email == "owner":
        email = contact.owner.email if contact.owner_id and contact.owner else ""
    if email:
        made.update(_notify_sales_email(ctx, str(email), payload))
    if ctx.step.get("webhook"):
        made["webhook"] = _delivery(ctx, WebhookDelivery.Channel.WEBHOOK, str(ctx.step["webhook"]), payload,
                                    "webhook").pk
    return StepResult({"deliveries": made})


def _notify_sales_email(ctx: Ctx, email: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The sales email goes through the outbox like every other email (throttled, retried, one per
    step run by its key), as an internal message: to the sales address (staging: the staging
    recipient, or nothing), whatever the lead's consent or suppression."""
    from campaigns.services import NoSender, message_queue_internal

    redirect = ""
    if ctx.enrollment.is_staging:
        redirect = staging_recipient_any()
        if not redirect:  # never the real sales address from a staging version
            return {"email": "dry_run"}
    message = str(payload["message"])
    try:
        row = message_queue_internal(
            contact=ctx.contact, to_email=email, subject=f"[Leadflow] {message}"[:200],
            text=f"{message}\n\n{payload['contact']}", idempotency_key=f"wf:{ctx.key}:email",
            source=f"workflow:{ctx.enrollment.workflow.key}"[:100], redirect_to=redirect,
            correlation_id=ctx.enrollment.correlation_id)
    except NoSender as exc:
        raise StepError(f"notify_sales email to {email!r}: {exc}") from exc
    return {"message_id": row.pk, "redirect_to": redirect}


def _webhook(ctx: Ctx) -> StepResult:
    wf = ctx.enrollment.workflow
    payload = {**(ctx.step.get("payload") or {}), "event": "workflow.webhook", "workflow": wf.key,
               "step": ctx.step["id"], "contact": _contact_payload(ctx.contact)}
    row = _delivery(ctx, WebhookDelivery.Channel.WEBHOOK, str(ctx.step["url"]), payload, "webhook")
    return StepResult({"delivery": row.pk, "status": row.status})


def _crm_sync(ctx: Ctx) -> StepResult:
    from automation.crm.services import crm_sync_request

    res = crm_sync_request(contact_id=ctx.contact.pk, sandbox=ctx.enrollment.is_staging,
                           reason=f"workflow:{ctx.enrollment.workflow.key}",
                           correlation_id=ctx.enrollment.correlation_id or None)
    return StepResult({"connection": res.connection_id, "item": res.item_id, "dry_run": res.dry_run,
                       "message": res.message})


def _exit(ctx: Ctx) -> StepResult:
    return StepResult({"reason": str(ctx.step.get("reason") or "")}, exit=True)


HANDLERS: dict[str, Callable[[Ctx], StepResult]] = {
    "send_email": _send_email, "wait": _wait, "branch": _branch, "update_contact": _update_contact,
    "adjust_score": _adjust_score, "notify_sales": _notify_sales, "crm_sync": _crm_sync, "webhook": _webhook,
    "exit": _exit,
}


# --- The scheduler's tick ---------------------------------------------------------------------------


def enrollments_wake(*, now: dt.datetime | None = None, limit: int = WAKE_LIMIT) -> int:
    """Claim due enrollments (waiting past next_run_at, or active past their lease) of unpaused
    workflows and enqueue advance jobs for them; returns how many. Safe to run concurrently."""
    now = now or timezone.now()
    total = 0
    for status in (EnrollmentStatus.WAITING, EnrollmentStatus.ACTIVE):
        while total < limit:
            claimed = _wake_batch(status, now, min(WAKE_BATCH, limit - total))
            total += claimed
            if claimed < WAKE_BATCH:
                break
    if total:
        log.info("woke %s workflow enrollments", total)
    return total


def _wake_batch(status: str, now: dt.datetime, size: int) -> int:
    with transaction.atomic():
        # Served by enrollment_due_idx / enrollment_lease_idx (partial on status).
        due = Enrollment.objects.filter(status=status, next_run_at__lte=now, workflow__paused=False) \
            .order_by("next_run_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        ids = list(due.values_list("pk", flat=True)[:size])
        if not ids:
            return 0
        claimed = list(Enrollment.objects.filter(pk__in=ids, status=status, next_run_at__lte=now)
                       .values_list("pk", flat=True))
        Enrollment.objects.filter(pk__in=claimed).update(status=EnrollmentStatus.ACTIVE, next_run_at=now + LEASE,
                                                         updated_at=now)
        enqueue_advance(enrollment_ids=claimed, chunk=WAKE_JOB_CHUNK)
    return len(ids)


# --- Webhook and sales-email deliveries -------------------------------------------------------------


def webhook_deliver(*, delivery_id: int, now: dt.datetime | None = None) -> str:
    """Send one pending delivery (claimed with a conditional UPDATE); retry later on 429/5xx/timeouts
    with backoff, fail on other 4xx. Returns the status afterwards."""
    now = now or timezone.now()
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING,
                                             next_attempt_at__lte=now).update(status=DeliveryStatus.SENDING)
    row = WebhookDelivery.objects.get(pk=delivery_id)
    if not claimed:
        return row.status
    row.attempts += 1
    try:
        # The HTTP call inside is the requests instrumentation's span, with the status code.
        with tracing.span("webhook.deliver", delivery_id=row.pk, attempt=row.attempts, channel=str(row.channel)):
            retry_after = _send(row)
    except Exception as exc:  # noqa: BLE001  transport errors are retryable
        retry_after, row.last_error = None, f"{type(exc).__name__}: {exc}"[:2000]
        retryable = True
    else:
        retryable = retry_after is not None
    if row.last_error.startswith("permanent:"):
        row.status = DeliveryStatus.FAILED
    elif not retryable:
        row.status, row.sent_at = DeliveryStatus.SENT, now
    elif row.attempts >= WEBHOOK_MAX_ATTEMPTS:
        row.status = DeliveryStatus.FAILED
    else:
        delay = max(retry_after or 0.0, retry_delay(row.attempts, base=dt.timedelta(seconds=10)).total_seconds())
        row.status, row.next_attempt_at = DeliveryStatus.PENDING, now + dt.timedelta(seconds=delay)
    row.save(update_fields=["status", "attempts", "last_error", "next_attempt_at", "sent_at"])
    return row.status


def _send(row: WebhookDelivery) -> float | None:
    """Send; None when done (or permanently failed, noted in last_error), else seconds to wait."""
    row.last_error = ""
    if row.channel == WebhookDelivery.Channel.EMAIL:  # rows queued before notify_sales used the outbox
        from django.core.mail import send_mail

        body = f"{row.payload.get('message', '')}\n\n{row.payload.get('contact')}"
        send_mail(subject=f"[Leadflow] {row.payload.get('message', 'Lead update')}"[:200], message=body,
                  from_email=None, recipient_list=[row.target])
        return None
    from core import outbound

    raw = json.dumps(row.payload, default=str).encode("utf-8")  # signed as sent, byte for byte
    try:  # internal addresses refused, redirects not followed (a 307 would carry the signed body on)
        response = outbound.post(row.target, data=raw, timeout=WEBHOOK_TIMEOUT,
                                 headers={"Idempotency-Key": row.idempotency_key, **signed_headers(raw)})
    except outbound.OutboundRefused as exc:
        row.last_error = f"permanent: refused: {str(exc)[:500]}"
        return None
    if response.status_code < 300:
        return None
    row.last_error = f"HTTP {outbound.status_text(response)}"  # never the body: it is whatever the URL said
    if response.status_code == 429 or response.status_code >= 500:
        header = response.headers.get("Retry-After", "")
        return float(header) if header.isdigit() else 0.0
    row.last_error = f"permanent: {row.last_error}"
    return None


def webhooks_wake(*, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Enqueue due pending deliveries (retries, or a job Redis lost); the claim makes repeats harmless."""
    now = now or timezone.now()
    ids = list(WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
               .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    # Deliveries stuck in "sending" (worker killed mid-call) go back to pending after the lease.
    WebhookDelivery.objects.filter(status=DeliveryStatus.SENDING, next_attempt_at__lte=now - LEASE) \
        .update(status=DeliveryStatus.PENDING)
    queue = get_queue(QUEUE)
    for pk in ids:
        queue.enqueue(WEBHOOK_JOB, pk, job_id=f"wf-webhook-{pk}-{uuid.uuid4().hex[:8]}")
    return len(ids)
