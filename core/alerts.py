"""Alert rules: conditions an ops engineer must hear about within a minute, each notified once per
incident (by email and/or webhook), resolved when the condition clears.

Run every minute by the scheduler (config/schedules.py). Thresholds are settings (README). Email
goes straight through Django's mail backend, not the outbox: the outbox may be what is failing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.db_router import replica_health
from core import ops, outbound
from core.models import Incident
from core.webhooks import signed_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Firing:
    key: str
    summary: str
    detail: dict[str, Any]


def evaluate(now: dt.datetime | None = None) -> list[Firing]:
    """Every rule's current state: what is wrong right now."""
    now = now or timezone.now()
    firing: list[Firing] = []
    for queue in ops.queue_stats():
        if queue.oldest_age is not None and queue.oldest_age > settings.ALERT_QUEUE_AGE_SECONDS:
            firing.append(Firing(f"queue_age:{queue.name}",
                                 f"queue {queue.name}: the oldest job has waited {queue.oldest_age:.0f} s",
                                 {"queue": queue.name, "oldest_age": round(queue.oldest_age), "depth": queue.depth}))
        if queue.failed:
            firing.append(Firing(f"dead_letters:{queue.name}", f"queue {queue.name}: {queue.failed} failed job(s)",
                                 {"queue": queue.name, "failed": queue.failed}))
    delivery = ops.delivery_stats(now)
    attempts = delivery.sent_last_hour + delivery.failed_last_hour
    if attempts >= settings.ALERT_MIN_ATTEMPTS and delivery.failure_rate > settings.ALERT_FAILURE_RATE:
        firing.append(Firing("delivery_failure_rate",
                             f"email: {delivery.failure_rate:.0%} of sends failed in the last hour",
                             {"failed": delivery.failed_last_hour, "sent": delivery.sent_last_hour}))
    if delivery.stuck:
        firing.append(Firing("messages_stuck", f"email: {delivery.stuck} message(s) stuck past their deadline",
                             {"stuck": delivery.stuck}))
    if _no_sends_while_queued(now):
        firing.append(Firing("no_sends", f"email: nothing sent for {settings.ALERT_NO_SENDS_MINUTES} min while "
                                         "messages are due", {"minutes": settings.ALERT_NO_SENDS_MINUTES}))
    firing.extend(_sender_rate_firings(now))
    crm = ops.crm_stats(now)
    if crm["stuck"]:
        firing.append(Firing("crm_stuck", f"CRM sync: {crm['stuck']} row(s) stuck past their deadline",
                             {"stuck": crm["stuck"]}))
    from automation.crm.models import CrmConnection  # a CRM whose daily API limit is spent (issue 16)

    for conn_id, name, until in CrmConnection.objects.filter(paused_until__gt=now).values_list(
            "pk", "name", "paused_until"):
        firing.append(Firing(f"crm_daily_limit:{conn_id}", f"CRM sync: {name}'s daily API limit is spent; paused "
                             f"until {until:%Y-%m-%d %H:%M} UTC", {"connection": name, "paused_until": str(until)}))
    from automation.rollback import rollback_incidents_open  # open until a fix is promoted

    firing += rollback_incidents_open(now)
    firing += _replica_firings()
    return firing


# A replica this far behind is not catching up by itself (replication broken, replay paused): worth a
# person's look. Shorter lags only send reads to the primary for a while (config/db_router.py).
REPLICA_ALERT_LAG_SECONDS = 300


def _replica_firings() -> list[Firing]:
    """The read replica (DATABASE_REPLICA_URL) as the checking process sees it: down, promoted, or
    far behind. Reads still work (they go to the primary), so it is a warning-sized incident."""
    health = replica_health()
    if health is None or health.usable:
        return []
    lag = health.lag
    # inf: it has replayed no transaction since it started, so how far behind is unknown (just started).
    if health.state == "ok" and (lag is None or lag == float("inf") or lag < REPLICA_ALERT_LAG_SECONDS):
        return []
    summary = f"read replica {health.label}: read-only pages read the primary ({health.reason})"
    detail = {"state": health.label, "lag_seconds": None if lag is None else round(lag), "reason": health.reason[:300]}
    return [Firing("db_replica", summary[:300], detail)]


COMPLAINT_KEY, BOUNCE_KEY = "complaint_rate:", "hard_bounce_rate:"


def _sender_rate_firings(now: dt.datetime) -> list[Firing]:
    """A sender whose complaint rate reached COMPLAINT_RATE_INCIDENT, or whose hard-bounce rate
    passed HARD_BOUNCE_RATE_INCIDENT, today or yesterday (UTC): one incident per sender and rule,
    open until both days are back under the line (or out of the window)."""
    complaints: dict[int, ops.SenderRate] = {}
    bounces: dict[int, ops.SenderRate] = {}
    for rate in ops.sender_rates(now):
        if rate.complaint_level == "incident" and (
                rate.sender_id not in complaints or rate.complaint_rate > complaints[rate.sender_id].complaint_rate):
            complaints[rate.sender_id] = rate
        if rate.hard_bounce_incident and (
                rate.sender_id not in bounces or rate.hard_bounce_rate > bounces[rate.sender_id].hard_bounce_rate):
            bounces[rate.sender_id] = rate
    firing = [Firing(f"{COMPLAINT_KEY}{r.sender_id}",
                     f"email: sender {r.name}: complaint rate {r.complaint_rate:.2%} on {r.day} ({r.complaints} of "
                     f"{r.sent} sent), at or over {settings.COMPLAINT_RATE_INCIDENT:.2%}",
                     {"sender": r.name, "sender_id": r.sender_id, "day": str(r.day), "complaints": r.complaints,
                      "sent": r.sent, "rate": round(r.complaint_rate, 5)})
              for r in complaints.values()]
    firing += [Firing(f"{BOUNCE_KEY}{r.sender_id}",
                      f"email: sender {r.name}: hard-bounce rate {r.hard_bounce_rate:.2%} on {r.day} "
                      f"({r.hard_bounces} of {r.attempted}), over {settings.HARD_BOUNCE_RATE_INCIDENT:.2%}",
                      {"sender": r.name, "sender_id": r.sender_id, "day": str(r.day), "hard_bounces": r.hard_bounces,
                       "attempted": r.attempted, "rate": round(r.hard_bounce_rate, 5)})
               for r in bounces.values()]
    return firing


def _pause_sender_on_complaints(incident: Incident) -> None:
    """A complaint-rate incident pauses its sender when SENDER_AUTO_PAUSE_ON_COMPLAINTS is on (once,
    when it opens: a sender resumed by hand stays resumed); the incident and its notification say so."""
    if not incident.key.startswith(COMPLAINT_KEY) or not settings.SENDER_AUTO_PAUSE_ON_COMPLAINTS:
        return
    from campaigns.reputation import sender_auto_pause

    if sender_auto_pause(sender_id=int(incident.key[len(COMPLAINT_KEY):]), reason=incident.summary,
                         detail={"incident": incident.pk}):
        incident.summary = f"{incident.summary}; the sender is paused"[:300]
        incident.detail = {**incident.detail, "sender_paused": True}
        Incident.objects.filter(pk=incident.pk).update(summary=incident.summary, detail=incident.detail)


def _no_sends_while_queued(now: dt.datetime) -> bool:
    from campaigns.models import PENDING_STATUSES, Message, MessageStatus
    from core.services import switch_paused

    if switch_paused("sending"):
        return False  # held on purpose
    since = now - dt.timedelta(minutes=settings.ALERT_NO_SENDS_MINUTES)
    # A paused sender's queue is held on purpose too (by hand, or over its complaint rate).
    waiting = Message.objects.filter(status__in=PENDING_STATUSES, created_at__lt=since, sender__is_paused=False) \
        .exclude(next_attempt_at__gt=now).exists()
    return waiting and not Message.objects.filter(status=MessageStatus.SENT, sent_at__gte=since).exists()


def alerts_check(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Open an incident (and notify, once) for each new firing rule; resolve the ones that cleared."""
    now = now or timezone.now()
    firing = {f.key: f for f in evaluate(now)}
    opened = notified = 0
    open_keys = set(Incident.objects.filter(resolved_at__isnull=True).values_list("key", flat=True))
    for key, fire in firing.items():
        if key in open_keys:
            continue
        try:
            with transaction.atomic():
                incident = Incident.objects.create(key=key, summary=fire.summary[:300], detail=fire.detail,
                                                   opened_at=now)
        except IntegrityError:
            continue  # another checker opened it a moment ago: it notifies, not us
        opened += 1
        _pause_sender_on_complaints(incident)
        notified += _notify(incident)
    resolved = Incident.objects.filter(resolved_at__isnull=True).exclude(key__in=list(firing)).update(resolved_at=now)
    return {"firing": len(firing), "opened": opened, "notified": notified, "resolved": resolved}


def open_incident(fire: Firing, *, now: dt.datetime | None = None) -> bool:
    """Open (and notify, once) an incident at once, from where the condition is seen (the minute check
    keeps it open while evaluate() still fires it). False when it is already open."""
    try:
        with transaction.atomic():
            incident = Incident.objects.create(key=fire.key, summary=fire.summary[:300], detail=fire.detail,
                                               opened_at=now or timezone.now())
    except IntegrityError:
        return False
    _notify(incident)
    return True


def _notify(incident: Incident) -> int:
    errors = []
    subject = f"[Leadflow alert] {incident.summary}"
    body = f"{incident.summary}\n\nOpened at {incident.opened_at:%Y-%m-%d %H:%M:%S %Z}.\n" \
           f"Details: {json.dumps(incident.detail)}\nSee {settings.SITE_URL.rstrip('/')}/admin/operations/\n"
    if settings.ALERT_EMAILS:
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, settings.ALERT_EMAILS)
        except Exception as exc:  # noqa: BLE001  a failed notification is recorded on the incident
            errors.append(f"email: {type(exc).__name__}: {exc}")
    if settings.ALERT_WEBHOOK_URL:
        try:
            payload = json.dumps({"key": incident.key, "summary": incident.summary, "detail": incident.detail,
                                  "opened_at": incident.opened_at.isoformat(), "text": subject}).encode("utf-8")
            response = outbound.post(settings.ALERT_WEBHOOK_URL, timeout=5, data=payload,
                                     headers=signed_headers(payload, purpose="alerts"))
            if response.status_code >= 300:  # a redirect is not followed: it is a failure too
                errors.append(f"webhook: HTTP {outbound.status_text(response)}")
        except requests.RequestException as exc:
            errors.append(f"webhook: {exc}")
    if not settings.ALERT_EMAILS and not settings.ALERT_WEBHOOK_URL:
        log.warning("alert (no ALERT_EMAILS or ALERT_WEBHOOK_URL configured): %s", incident.summary)
    Incident.objects.filter(pk=incident.pk).update(notified_at=timezone.now(), notify_error="\n".join(errors))
    return 0 if errors else 1
