"""What ops needs to see, read from the database and Redis at request time: the operations page,
/metrics and /readyz all use these selectors, so they never disagree.

Every figure is one grouped query or one Redis call; nothing loops over rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.db.models.functions import TruncMinute
from django.utils import timezone
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.worker import Worker

from core.models import Heartbeat, Switch
from core.queues import get_connection, get_queue

STUCK_QUEUED = dt.timedelta(minutes=10)  # a due message or CRM row untouched this long is stuck


@dataclass
class QueueStats:
    name: str
    depth: int
    oldest_age: float | None  # seconds the oldest waiting job has waited
    running: int
    failed: int


def queue_stats() -> list[QueueStats]:
    """Per RQ queue: jobs waiting, age of the oldest, running, failed (dead letters)."""
    stats = []
    now = timezone.now()
    for name in settings.QUEUE_NAMES:
        queue = get_queue(name)
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


def workers_seen() -> int:
    return len(Worker.all(connection=get_connection()))


@dataclass
class DeliveryStats:
    by_status: dict[str, int]
    stuck: int
    sent_last_hour: int
    failed_last_hour: int
    per_minute: list[tuple[dt.datetime, int, int]] = field(default_factory=list)  # (minute, sent, failed)

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
                         failed_last_hour=sum(f for _, _, f in per_minute))


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
    try:
        get_connection().ping()
        redis = "ok"
        workers = "ok" if workers_seen() else "error: no worker registered"
    except RedisError as exc:
        redis = f"error: {type(exc).__name__}"
        workers = "unknown: Redis unavailable"
    return Readiness(database=database, redis=redis, workers=workers)
