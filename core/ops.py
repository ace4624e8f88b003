"""What ops needs to see, read from the database and Redis at request time: the operations page,
/metrics and /readyz all use these selectors, so they never disagree.

Every figure is one grouped query or one Redis call (or pipeline); nothing loops over rows.

Redis going away is when ops needs these most, so the Redis-backed figures are read together
(redis_snapshot) with short timeouts, and a Redis that does not answer becomes an error to show
next to the database-backed figures, never an error page."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import django_rq
from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.db.models.functions import Coalesce, TruncDate, TruncMinute
from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.worker import Worker

from core.models import Heartbeat, Switch
from core.queues import get_connection, get_queue

log = logging.getLogger(__name__)

STUCK_QUEUED = dt.timedelta(minutes=10)  # a due message or CRM row untouched this long is stuck

# --- Reaching Redis from the ops paths ---------------------------------------------------------------------
# redis-py waits 5 s to connect and 5 s per reply by default: a dead or black-holed Redis would hold
# the operations page, a scrape or a readiness probe that long for every call. These read paths use
# their own client with short timeouts (the workers keep django-rq's).
REDIS_TIMEOUT = 2.0  # seconds to connect and per reply: the page and /metrics (one pipelined read per figure)
READY_REDIS_TIMEOUT = 0.5  # /readyz: orchestrators' probes time out after about a second
# Redis down, unreachable or answering garbage. Anything else (a TypeError, a bad key) is a bug and raises.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)


def ops_redis(*, timeout: float = REDIS_TIMEOUT) -> Redis:
    """A client for django-rq's "default" Redis (RQ_QUEUES) that gives up after `timeout` seconds."""
    config: dict[str, Any] = settings.RQ_QUEUES["default"]
    if "URL" not in config:  # host/port, sentinel or cache configs: django-rq's own client, its timeouts
        return get_connection()
    return Redis.from_url(config["URL"], db=config.get("DB"), socket_connect_timeout=timeout,
                          socket_timeout=timeout)


def redis_error_text(exc: BaseException) -> str:
    """The error as ops reads it: 'ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.'"""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass
class QueueStats:
    name: str
    depth: int
    oldest_age: float | None  # seconds the oldest waiting job has waited
    running: int
    failed: int


def queue_stats(*, redis: Redis | None = None) -> list[QueueStats]:
    """Per RQ queue: jobs waiting, age of the oldest, running, failed (dead letters). Raises
    RedisError when Redis does not answer (redis_snapshot turns that into a message)."""
    stats = []
    now = timezone.now()
    for name in settings.QUEUE_NAMES:
        queue = get_queue(name) if redis is None else django_rq.get_queue(name, connection=redis)
        oldest = None
        ids = queue.get_job_ids(0, 1)
        if ids:
            job = queue.fetch_job(ids[0])
            if job is not None and job.enqueued_at is not None:
                enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=dt.UTC)
                oldest = max(0.0, (now - enqueued).total_seconds())
        stats.append(QueueStats(
            name=name, depth=queue.count, oldest_age=oldest,
            running=StartedJobRegistry(queue=queue).count, failed=FailedJobRegistry(queue=queue).count,
        ))
    return stats


def workers_seen(*, redis: Redis | None = None) -> int:
    return len(Worker.all(connection=get_connection() if redis is None else redis))


# --- Job throughput per queue: per-minute counters in Redis, written by the workers ---------------------------
# Finished jobs leave no row anywhere (RQ keeps results a while at most), so each worker counts its
# jobs' outcomes as they happen (core/management/commands/worker.py, JobCounters): one hash per
# queue and minute, {"finished": n, "failed": n}, expiring after two hours. Counters are only
# observations: a Redis flush loses the chart, never work.
JOB_COUNTERS_KEY = "leadflow:jobs:{queue}:{minute}"  # minute: Unix time // 60
JOB_COUNTERS_TTL = 2 * 3600  # outlives the hour the operations page shows
JOB_OUTCOMES = ("finished", "failed")


def job_outcome_record(*, redis: Redis, queue: str, outcome: str, at: float | None = None) -> None:
    """Count one job outcome ("finished" or "failed") in its queue's minute. Never raises: a
    counter that cannot be written is logged and lost, the job it counts is not affected."""
    if outcome not in JOB_OUTCOMES:
        raise ValueError(f"unknown job outcome {outcome!r}; known: {', '.join(JOB_OUTCOMES)}")
    key = JOB_COUNTERS_KEY.format(queue=queue, minute=int((time.time() if at is None else at) // 60))
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.hincrby(key, outcome, 1)
        pipe.expire(key, JOB_COUNTERS_TTL)
        pipe.execute()
    except Exception:  # noqa: BLE001  counting must never fail a job; the log says why it was lost
        log.warning("job %s counter not recorded for queue %s", outcome, queue, exc_info=True)


@dataclass
class QueueThroughput:
    name: str
    per_minute: list[tuple[dt.datetime, int, int]]  # (minute, finished, failed): the last 60 minutes, oldest first

    @property
    def finished(self) -> int:
        return sum(f for _, f, _ in self.per_minute)

    @property
    def failed(self) -> int:
        return sum(f for _, _, f in self.per_minute)

    @property
    def failure_rate(self) -> float:
        done = self.finished + self.failed
        return self.failed / done if done else 0.0


def queue_throughput(now: dt.datetime | None = None, *, redis: Redis | None = None) -> list[QueueThroughput]:
    """Per RQ queue, jobs finished and failed in each of the last 60 minutes (the current one
    included): one pipelined Redis round trip for every queue and minute."""
    now = now or timezone.now()
    last = int(now.timestamp() // 60)
    minutes = range(last - 59, last + 1)
    pipe = (get_connection() if redis is None else redis).pipeline(transaction=False)
    for name in settings.QUEUE_NAMES:
        for minute in minutes:
            pipe.hmget(JOB_COUNTERS_KEY.format(queue=name, minute=minute), *JOB_OUTCOMES)
    replies = iter(pipe.execute())
    tz = timezone.get_current_timezone()
    result = []
    for name in settings.QUEUE_NAMES:
        per_minute = []
        for minute in minutes:
            finished, failed = next(replies)
            per_minute.append((dt.datetime.fromtimestamp(minute * 60, tz=tz), int(finished or 0), int(failed or 0)))
        result.append(QueueThroughput(name=name, per_minute=per_minute))
    return result


@dataclass
class RedisSnapshot:
    """Everything ops reads from Redis, or why it could not be read."""

    queues: list[QueueStats] = field(default_factory=list)
    throughput: list[QueueThroughput] = field(default_factory=list)
    workers: int = 0
    error: str | None = None  # set when Redis did not answer; the lists are then empty

    @property
    def up(self) -> bool:
        return self.error is None


def redis_snapshot(now: dt.datetime | None = None) -> RedisSnapshot:
    """Queues, job throughput and workers in one go with short timeouts; when Redis does not
    answer, a snapshot holding only the error, logged once (a warning: ops reads the page)."""
    redis = ops_redis()
    try:
        return RedisSnapshot(queues=queue_stats(redis=redis), throughput=queue_throughput(now, redis=redis),
                             workers=workers_seen(redis=redis))
    except REDIS_ERRORS as exc:
        error = redis_error_text(exc)
        log.warning("Redis unreachable; queue, throughput and worker figures left out: %s", error)
        return RedisSnapshot(error=error)
    finally:
        redis.close()


@dataclass
class DeliveryStats:
    by_status: dict[str, int]
    stuck: int
    sent_last_hour: int
    failed_last_hour: int
    per_minute: list[tuple[dt.datetime, int, int]] = field(default_factory=list)  # (minute, sent, failed)
    # Not sent on purpose, by the rule that stopped them (no_consent, unsubscribed, topic_unsubscribed,
    # hard_bounce...): counted apart from sent ones, so a marketer sees why mail did not go (issue 20).
    suppressed_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def failure_rate(self) -> float:
        done = self.sent_last_hour + self.failed_last_hour
        return self.failed_last_hour / done if done else 0.0


def delivery_stats(now: dt.datetime | None = None) -> DeliveryStats:
    from campaigns.models import Message, MessageStatus

    now = now or timezone.now()
    hour_ago = now - dt.timedelta(hours=1)
    by_status = dict(Message.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    stuck = Message.objects.filter(
        Q(status=MessageStatus.SENDING, claimed_at__lt=now - dt.timedelta(seconds=settings.DELIVERY_STALE_SECONDS))
        | Q(status__in=[MessageStatus.QUEUED, MessageStatus.DEFERRED], next_attempt_at__isnull=True,
            created_at__lt=now - STUCK_QUEUED)
        | Q(status__in=[MessageStatus.QUEUED, MessageStatus.DEFERRED], next_attempt_at__lt=now - STUCK_QUEUED)
    ).count()
    recent = (Message.objects.filter(updated_at__gte=hour_ago, status__in=[MessageStatus.SENT, MessageStatus.FAILED])
              .annotate(minute=TruncMinute("updated_at")).values_list("minute", "status").annotate(n=Count("id")))
    minutes: dict[dt.datetime, list[int]] = {}
    for minute, status, n in recent:
        minutes.setdefault(minute, [0, 0])[0 if status == MessageStatus.SENT else 1] += n
    per_minute = [(m, s, f) for m, (s, f) in sorted(minutes.items())]
    return DeliveryStats(by_status=by_status, stuck=stuck, per_minute=per_minute,
                         sent_last_hour=sum(s for _, s, _ in per_minute),
                         failed_last_hour=sum(f for _, _, f in per_minute),
                         suppressed_by_reason=dict(
                             Message.objects.filter(status=MessageStatus.SUPPRESSED).values_list("reason")
                             .annotate(n=Count("id")).order_by("-n").values_list("reason", "n")))


# --- Sender reputation: complaint and hard-bounce rates per sender and UTC day ------------------------------
# Mailbox providers judge a sender by the day: Gmail's spam rate is complaints over mail delivered
# that day (https://support.google.com/a/answer/81126: below 0.1 %, never 0.3 %). A message counts on
# the day it was sent (or refused at RCPT); a complaint or bounce reported later counts on that day.
# sent: accepted by the relay; attempted: sent + refused with a hard bounce at RCPT.
RATE_DAYS = 2  # today and yesterday: complaints about yesterday's mail still arrive today


@dataclass
class SenderRate:
    sender_id: int
    name: str
    day: dt.date
    sent: int
    attempted: int
    complaints: int
    hard_bounces: int
    is_paused: bool = False

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.attempted if self.attempted else 0.0

    @property
    def complaint_percent(self) -> str:
        return f"{self.complaint_rate:.2%}"

    @property
    def hard_bounce_percent(self) -> str:
        return f"{self.hard_bounce_rate:.2%}"

    @property
    def complaint_level(self) -> str:
        """"incident", "warn" or "" (below either line, or too few sends to judge)."""
        if self.sent < settings.SENDER_RATE_MIN_SENT:
            return ""
        if self.complaint_rate >= settings.COMPLAINT_RATE_INCIDENT:
            return "incident"
        return "warn" if self.complaint_rate >= settings.COMPLAINT_RATE_WARN else ""

    @property
    def hard_bounce_incident(self) -> bool:
        return (self.attempted >= settings.SENDER_RATE_MIN_SENT
                and self.hard_bounce_rate > settings.HARD_BOUNCE_RATE_INCIDENT)


def sender_rates(now: dt.datetime | None = None, *, days: int = RATE_DAYS) -> list[SenderRate]:
    """Per sender and UTC day of the last `days` (today included), newest first: one grouped
    query over the outbox. Sent messages come from message_sender_sent_idx (a range per sender),
    bounced and refused ones from message_bounced_idx (their bounce is never before their send).
    Test copies are left out."""
    from campaigns.models import Message, MessageStatus, SenderProfile

    now = now or timezone.now()
    first_day = now.astimezone(dt.UTC).date() - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first_day, dt.time.min, tzinfo=dt.UTC)
    senders = {pk: (name, paused) for pk, name, paused in SenderProfile.objects.values_list("pk", "name", "is_paused")}
    rows = (Message.objects
            .filter(Q(status=MessageStatus.SENT, sender_id__in=list(senders), sent_at__gte=since)
                    | Q(bounced_at__gte=since), is_test=False)
            .annotate(day=TruncDate(Coalesce("sent_at", "bounced_at"), tzinfo=dt.UTC))
            .values_list("sender_id", "day")
            .annotate(sent=Count("id", filter=Q(sent_at__isnull=False)), attempted=Count("id"),
                      complaints=Count("id", filter=Q(complained_at__isnull=False, sent_at__isnull=False)),
                      hard_bounces=Count("id", filter=Q(bounced_at__isnull=False)))
            .order_by())
    rates = [SenderRate(sender_id=sender_id, name=senders.get(sender_id, ("?", False))[0], day=day, sent=sent,
                        attempted=attempted, complaints=complaints, hard_bounces=bounced,
                        is_paused=senders.get(sender_id, ("?", False))[1])
             for sender_id, day, sent, attempted, complaints, bounced in rows if day >= first_day]
    return sorted(rates, key=lambda r: (-r.day.toordinal(), r.name))


def crm_stats(now: dt.datetime | None = None) -> dict[str, Any]:
    from automation.crm.models import CrmSyncItem

    now = now or timezone.now()
    by_status = dict(CrmSyncItem.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    stuck = CrmSyncItem.objects.filter(status="pending", next_attempt_at__lt=now - STUCK_QUEUED).count() \
        + CrmSyncItem.objects.filter(status="sending", claimed_at__lt=now - STUCK_QUEUED).count()
    return {"by_status": by_status, "stuck": stuck}


def failures(now: dt.datetime | None = None) -> dict[str, int]:
    """Long operations that failed in the last day: imports and score recomputes."""
    from contacts.models import ImportJob
    from scoring.models import RecomputeJob

    since = (now or timezone.now()) - dt.timedelta(days=1)
    return {
        "imports": ImportJob.objects.filter(status=ImportJob.Status.FAILED, created_at__gte=since).count(),
        "recomputes": RecomputeJob.objects.filter(status="failed", created_at__gte=since).count(),
    }


# --- Workflows whose step failure rate jumped ----------------------------------------------------------------
# A step run counts once, when its outcome was last recorded: finished_at for one that succeeded or
# failed for good, started_at for one failed and waiting to retry (its row keeps no later time).
# Failures are "failed" and "retrying"; running and waiting runs have no outcome yet.
# A workflow jumped when, in the last hour, it had at least JUMP_MIN_FAILURES failures, a failure
# rate of at least JUMP_MIN_RATE, and at least JUMP_FACTOR times its rate over the 24 hours before.
JUMP_MIN_FAILURES = 5
JUMP_MIN_RATE = 0.10
JUMP_FACTOR = 2.0
JUMP_RECENT = dt.timedelta(hours=1)
JUMP_BASELINE = dt.timedelta(hours=24)


@dataclass
class WorkflowJump:
    workflow_id: int
    name: str
    recent_failed: int
    recent_total: int
    baseline_failed: int
    baseline_total: int
    version_ids: list[int] = field(default_factory=list)  # every version: the admin filters step runs by these

    @property
    def recent_rate(self) -> float:
        return self.recent_failed / self.recent_total if self.recent_total else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_failed / self.baseline_total if self.baseline_total else 0.0

    @property
    def jumped(self) -> bool:
        return (self.recent_failed >= JUMP_MIN_FAILURES and self.recent_rate >= JUMP_MIN_RATE
                and self.recent_rate >= JUMP_FACTOR * self.baseline_rate)


def workflow_failure_jumps(now: dt.datetime | None = None) -> list[WorkflowJump]:
    """Workflows whose step runs fail much more in the last hour than over the day before, worst
    first: one grouped query for the rates, one for the jumped workflows' version ids."""
    from automation.models import StepRun, StepRunStatus, WorkflowVersion

    now = now or timezone.now()
    hour_ago, since = now - JUMP_RECENT, now - JUMP_RECENT - JUMP_BASELINE
    failing = [StepRunStatus.FAILED, StepRunStatus.RETRYING]
    recent, baseline = Q(at__gte=hour_ago), Q(at__lt=hour_ago)
    # Finished runs by finished_at, runs waiting to retry by started_at: each side has an index
    # (a filter on the Coalesce of both had none, and scanned every step run on each page view).
    window = (Q(status__in=[StepRunStatus.SUCCEEDED, StepRunStatus.FAILED], finished_at__gte=since,
                finished_at__lte=now)
              | Q(status=StepRunStatus.RETRYING, finished_at__isnull=True, started_at__gte=since, started_at__lte=now))
    rows = (StepRun.objects
            .filter(window)
            .annotate(at=Coalesce("finished_at", "started_at"))
            .values("version__workflow_id", "version__workflow__name")
            .annotate(recent_total=Count("id", filter=recent),
                      recent_failed=Count("id", filter=recent & Q(status__in=failing)),
                      baseline_total=Count("id", filter=baseline),
                      baseline_failed=Count("id", filter=baseline & Q(status__in=failing)))
            .order_by())
    jumps = [WorkflowJump(workflow_id=r["version__workflow_id"], name=r["version__workflow__name"],
                          recent_failed=r["recent_failed"], recent_total=r["recent_total"],
                          baseline_failed=r["baseline_failed"], baseline_total=r["baseline_total"])
             for r in rows]
    jumps = [j for j in jumps if j.jumped]
    if jumps:
        versions: dict[int, list[int]] = defaultdict(list)
        for workflow_id, version_id in (WorkflowVersion.objects.filter(workflow_id__in=[j.workflow_id for j in jumps])
                                        .order_by("pk").values_list("workflow_id", "pk")):
            versions[workflow_id].append(version_id)
        for jump in jumps:
            jump.version_ids = versions[jump.workflow_id]
    return sorted(jumps, key=lambda j: (-j.recent_rate, -j.recent_failed, j.name))


# --- Segments and imports that failed -------------------------------------------------------------------------
FAILED_LIST_LIMIT = 20  # rows listed on the page; the counts and links cover the rest


def failed_segments(limit: int = FAILED_LIST_LIMIT) -> tuple[int, list[Any]]:
    """Active segments whose last full refresh failed, or that the live event update had to skip
    (cleared by the next refresh that succeeds), newest failure first: (how many, the first `limit`)."""
    from contacts.models import Segment

    failed = Segment.objects.filter(is_active=True, refresh_failed_at__isnull=False)
    return failed.count(), list(failed.order_by("-refresh_failed_at", "pk")
                                .only("pk", "name", "refresh_failed_at", "refresh_error", "refreshed_at")[:limit])


def failed_imports(now: dt.datetime | None = None, limit: int = FAILED_LIST_LIMIT) -> list[Any]:
    """Imports that failed in the last day, newest first (their message says why)."""
    from contacts.models import ImportJob

    since = (now or timezone.now()) - dt.timedelta(days=1)
    return list(ImportJob.objects.filter(status=ImportJob.Status.FAILED, created_at__gte=since)
                .order_by("-created_at", "-pk").only("pk", "original_name", "message", "created_at")[:limit])


def unprocessed_events() -> int:
    from contacts.models import Event

    return Event.objects.filter(processed_at__isnull=True).count()


def heartbeats(now: dt.datetime | None = None) -> dict[str, float]:
    now = now or timezone.now()
    return {beat.name: (now - beat.seen_at).total_seconds() for beat in Heartbeat.objects.all()}


def switches() -> dict[str, bool]:
    paused = dict(Switch.objects.values_list("name", "paused"))
    return {name: bool(paused.get(name, False)) for name in Switch.Name.values}


@dataclass
class Readiness:
    database: str
    redis: str
    workers: str

    @property
    def ready(self) -> bool:
        return self.database == "ok" and self.redis == "ok" and self.workers == "ok"


def readiness() -> Readiness:
    """The database answers, Redis answers, and at least one worker is registered."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001  any failure means not ready; the message says which
        database = f"error: {type(exc).__name__}"
    client = ops_redis(timeout=READY_REDIS_TIMEOUT)
    try:
        client.ping()
        redis = "ok"
        workers = "ok" if workers_seen(redis=client) else "error: no worker registered"
    except REDIS_ERRORS as exc:  # the type only: /readyz answers anyone, the log has the address
        log.warning("readiness: Redis unreachable: %s", redis_error_text(exc))
        redis = f"error: {type(exc).__name__}"
        workers = "unknown: Redis unavailable"
    finally:
        client.close()
    return Readiness(database=database, redis=redis, workers=workers)
