"""The capacity check at promotion: how much a version would send per hour and per day, through
which sender, CRM connection and webhook host, against each of their limits (docs/workflows.md,
"Capacity check", explains the inputs, the arithmetic and its error with a worked example).

Inputs:
- entrants: for an `event` trigger, the busiest hour and the busiest day of that event type in the
  last CAPACITY_WINDOW_DAYS; for `segment_entered`, the segment's size (all of it in one hour);
  without history (a new event, `score_reached`, `manual`), the audience: every non-test contact,
  all in one hour. Each basis is stated in `assumptions`.
- per entrant: the most emails, CRM syncs and webhook calls along any one path through the steps
  (both sides of a branch are tried; each step counts once per path).
Every entrant is assumed to arrive at once within its hour (the burst), and steps after a wait
still count in the same hour (over a steady rate they do). Both make the figures an upper bound.

A limit is "ok", "over" (the estimate passes it: promoting needs an acknowledgement, audited),
"delay" (throttled or held, but everything goes out within the day), or "unknown" (the limit
cannot be read, e.g. a rate that does not parse, a receiver's own limit): never shown as fine.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from automation import definition as d
from automation.dependencies import webhook_host
from automation.models import VersionState, WorkflowVersion

OK, OVER, DELAY, UNKNOWN = "ok", "over", "delay", "unknown"
MANUAL_PER_HOUR = 500  # one admin form's worth (services.MANUAL_ENROLL_MAX)


@dataclass
class Limit:
    name: str  # rate, burst, warm-up cap today, frequency cap, quiet hours, paused, daily API limit
    limit: str  # the limit as configured, in words
    estimate: str  # what the version would ask of it
    status: str  # ok | over | delay | unknown
    note: str = ""


@dataclass
class Resource:
    kind: str  # sender | crm_connection | webhook_host
    ref: str
    label: str
    per_hour: float
    per_day: float
    steps: list[str]
    limits: list[Limit] = field(default_factory=list)
    delay_seconds: float | None = None  # the longest the last of a burst waits for the rate
    summary: str = ""  # "emails from welcome will take up to 11 minutes at 50/s"


@dataclass
class Entrants:
    basis: str  # events | segment | audience | manual
    per_hour: int
    per_day: int
    assumptions: list[str]


@dataclass
class CapacityReport:
    workflow: str
    version: int
    state: str
    entrants: Entrants
    resources: list[Resource]

    @property
    def over(self) -> list[str]:
        """'<resource>: <limit>' for every limit the estimate passes."""
        return [f"{r.label}: {lim.name}" for r in self.resources for lim in r.limits if lim.status == OVER]

    def as_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "version": self.version, "state": self.state,
                "entrants": asdict(self.entrants), "resources": [asdict(r) for r in self.resources],
                "over": self.over, "needs_acknowledgement": bool(self.over)}


# --- Entrants -----------------------------------------------------------------------------------------------


def entrants(version: WorkflowVersion, now: dt.datetime) -> Entrants:
    from contacts.models import Contact, Event, Segment, SegmentMembership

    trigger = version.definition.get("trigger") or {}
    kind = trigger.get("type")
    days = settings.CAPACITY_WINDOW_DAYS
    if kind == "event":
        events = Event.objects.filter(event_type=str(trigger.get("event")),
                                      occurred_at__gt=now - dt.timedelta(days=days), occurred_at__lte=now)
        hour = events.annotate(h=TruncHour("occurred_at")).values("h").annotate(n=Count("id")).order_by("-n").first()
        day = events.annotate(day=TruncDate("occurred_at")).values("day").annotate(n=Count("id")).order_by("-n").first()
        if hour:
            notes = [f"the busiest hour of {trigger.get('event')!r} events in the last {days} days: {hour['n']}; "
                     f"the busiest day: {day['n'] if day else hour['n']}"]
            if trigger.get("where"):
                notes.append("the trigger's `where` filter is not applied: every event of the type counts")
            return Entrants("events", hour["n"], day["n"] if day else hour["n"], notes)
    if kind == "segment_entered":
        seg = str(trigger.get("segment"))
        segment = Segment.objects.filter(**({"pk": int(seg)} if seg.isdigit() else {"name": seg})).first()
        if segment is not None:
            size = SegmentMembership.objects.filter(segment=segment).count()
            return Entrants("segment", size, size,
                            [f"segment {segment.name!r} has {size} member(s): all are assumed to enter in one hour"])
    if kind == "manual":
        return Entrants("manual", MANUAL_PER_HOUR, MANUAL_PER_HOUR,
                        [f"manual entry: one admin form ({MANUAL_PER_HOUR} addresses) in one hour"])
    audience = Contact.objects.filter(is_test=False).count()
    why = {"event": f"no {trigger.get('event')!r} events in the last {days} days",
           "segment_entered": f"segment {trigger.get('segment')!r} not found",
           "score_reached": "a score trigger has no event history"}.get(str(kind), "no history")
    return Entrants("audience", audience, audience,
                    [f"{why}: the whole audience ({audience} contacts) is assumed to enter in one hour"])


# --- Per entrant: the heaviest path -------------------------------------------------------------------------


def path_max(steps: list[dict[str, Any]], weight: Callable[[dict[str, Any]], int]) -> tuple[int, list[str]]:
    """The most `weight` along one path from the first step (a back edge ends the path: a loop
    needs a wait, so its next round is another hour), and the weighted steps on that path."""
    index = d.step_map(steps)
    memo: dict[str, tuple[int, list[str]]] = {}

    def best(sid: str, stack: frozenset[str]) -> tuple[int, list[str]]:
        if sid not in index or sid in stack:
            return 0, []
        if sid in memo:
            return memo[sid]
        i = index[sid]
        own = weight(steps[i])
        tail = max((best(n, stack | {sid}) for n in d.successors(steps, i)), key=lambda x: x[0], default=(0, []))
        result = (own + tail[0], ([sid] if own else []) + tail[1])
        if not stack & _reaches(steps, sid):  # memoise only results that no open path cut short
            memo[sid] = result
        return result

    return best(str(steps[0]["id"]), frozenset()) if steps else (0, [])


def _reaches(steps: list[dict[str, Any]], start: str) -> set[str]:
    index, seen, todo = d.step_map(steps), set(), [start]
    while todo:
        sid = todo.pop()
        if sid in seen or sid not in index:
            continue
        seen.add(sid)
        todo.extend(d.successors(steps, index[sid]))
    return seen


# --- Limits ---------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} seconds"
    if seconds < 90 * 60:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"


def _rate_words(rate: Any) -> str:
    per_second = rate.count / rate.period
    return f"{per_second:g}/s" if per_second >= 1 else f"{per_second * 3600:g}/h"


def _sender_resource(sender: Any, emails: tuple[int, list[str]], marketing: tuple[int, list[str]], ent: Entrants,
                     now: dt.datetime) -> Resource:
    from campaigns import delivery_rules
    from campaigns.models import Message, MessageStatus
    from core.throttle import parse_rate

    per_hour, per_day = ent.per_hour * emails[0], ent.per_day * emails[0]
    res = Resource("sender", str(sender.pk), sender.name, per_hour, per_day, emails[1])
    if sender.is_paused:
        res.limits.append(Limit("paused", "paused", f"{per_hour:g}/h", OVER, "the sender is paused: nothing is sent"))
    try:
        rate = parse_rate(sender.rate, burst=sender.burst)
    except ValueError as exc:
        res.limits.append(Limit("rate", sender.rate or "(none)", f"{per_hour:g}/h", UNKNOWN, str(exc)))
    else:
        hourly = rate.count / rate.period * 3600
        res.delay_seconds = max(0.0, per_hour - rate.burst) * rate.interval
        res.summary = (f"emails from {', '.join(emails[1])} will take up to {_duration(res.delay_seconds)} "
                       f"at {_rate_words(rate)}")
        res.limits.append(Limit("rate", f"{sender.rate} ({hourly:,.0f}/h)", f"{per_hour:,.0f}/h",
                                OVER if per_hour > hourly else OK, res.summary))
        res.limits.append(Limit("burst", f"{rate.burst} back to back", f"up to {per_hour:,.0f} at once",
                                DELAY if per_hour > rate.burst else OK,
                                f"{max(0, per_hour - rate.burst):,.0f} wait for the rate" if per_hour > rate.burst
                                else ""))
    if isinstance(sender.domain_limits, dict) and sender.domain_limits:
        res.limits.append(Limit(
            "domain limits", ", ".join(f"{k} {v}" for k, v in sorted(sender.domain_limits.items())),
            f"{per_hour:,.0f}/h across all domains", UNKNOWN,
            "how the entrants split by recipient domain is not estimated"))
    try:
        tz = zoneinfo.ZoneInfo(sender.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = None
    res.limits.append(_warmup_limit(sender, per_day, now, tz, delivery_rules.warmup_cap, Message, MessageStatus))
    if sender.frequency_cap:
        res.limits.append(Limit(
            "frequency cap", f"{sender.frequency_cap} per contact in {sender.frequency_days} days",
            f"{marketing[0]} marketing per contact", OVER if marketing[0] > sender.frequency_cap else OK,
            f"each contact's emails past {sender.frequency_cap} are suppressed (not counting other sends)"
            if marketing[0] > sender.frequency_cap else ""))
    else:
        res.limits.append(Limit("frequency cap", "none", f"{marketing[0]} marketing per contact", OK))
    res.limits.append(_quiet_limit(sender, marketing[0], ent))
    return res


def _warmup_limit(sender: Any, per_day: float, now: dt.datetime, tz: Any, warmup_cap: Any, message: Any,
                  status: Any) -> Limit:
    if tz is None:
        return Limit("warm-up cap today", "?", f"{per_day:,.0f}/day", UNKNOWN, f"time zone {sender.time_zone!r}?")
    local = now.astimezone(tz)
    cap = warmup_cap(sender, local.date())
    if cap is None:
        return Limit("warm-up cap today", "none", f"{per_day:,.0f}/day", OK)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    sent = message.objects.filter(sender=sender, status=status.SENT, sent_at__gte=day_start).count()
    left = max(0, cap - sent)
    over = per_day > left
    note = (f"{per_day - left:,.0f} wait for the next days' caps" if over else "")
    return Limit("warm-up cap today", f"{cap:,} today ({sent:,} sent, {left:,} left)", f"{per_day:,.0f}/day",
                 OVER if over else OK, note)


def _quiet_limit(sender: Any, marketing: int, ent: Entrants) -> Limit:
    start, end = sender.quiet_hours_start, sender.quiet_hours_end
    if start is None or end is None or start == end or not marketing:
        return Limit("quiet hours", "none" if start is None or start == end else f"{start:%H:%M}-{end:%H:%M}",
                     "—", OK)
    today = dt.date(2000, 1, 1)
    length = (dt.datetime.combine(today, end) - dt.datetime.combine(today, start)).total_seconds() % 86400
    return Limit("quiet hours", f"{start:%H:%M}-{end:%H:%M} {sender.time_zone}", f"{marketing} marketing per contact",
                 DELAY, f"marketing emails triggered in quiet hours wait until {end:%H:%M}: up to "
                        f"{_duration(length)}")


def _crm_resource(conn: Any, syncs: tuple[int, list[str]], ent: Entrants, now: dt.datetime) -> Resource:
    from core.throttle import parse_rate

    per_hour, per_day = ent.per_hour * syncs[0], ent.per_day * syncs[0]
    res = Resource("crm_connection", str(conn.pk), conn.name, per_hour, per_day, syncs[1])
    try:
        rate = parse_rate(conn.rate_limit)
    except ValueError as exc:
        res.limits.append(Limit("rate limit", conn.rate_limit or "(none)", f"{per_hour:,.0f} requests/h", UNKNOWN,
                                str(exc)))
    else:
        hourly = rate.count / rate.period * 3600
        # A burst is batched (batch_size contacts a request); a trickle is one request per contact.
        burst_requests = math.ceil(per_hour / max(1, conn.batch_size))
        res.delay_seconds = max(0, burst_requests - 1) * rate.interval
        res.summary = (f"CRM syncs from {', '.join(syncs[1])}: {per_hour:,.0f} contacts in "
                       f"{burst_requests:,} request(s), up to {_duration(res.delay_seconds)} at {_rate_words(rate)}")
        res.limits.append(Limit("rate limit", f"{conn.rate_limit} ({hourly:,.0f}/h)",
                                f"{burst_requests:,}-{per_hour:,.0f} requests/h", OVER if per_hour > hourly else OK,
                                res.summary))
    if conn.paused_until and conn.paused_until > now:
        res.limits.append(Limit("daily API limit", f"spent until {conn.paused_until:%Y-%m-%d %H:%M} UTC",
                                f"{per_day:,.0f}/day", OVER, "nothing is sent before the reset"))
    else:
        res.limits.append(Limit("daily API limit", "unknown (the CRM's allowance is not configured)",
                                f"{per_day:,.0f}/day", UNKNOWN, "known only when the CRM refuses (sync pauses)"))
    return res


def _connection_for(state: str) -> Any:
    from automation.crm.models import CrmConnection

    active = CrmConnection.objects.filter(is_active=True).order_by("name")
    if state == VersionState.STAGING:
        return active.filter(is_sandbox=True).first() or active.filter(is_sandbox=False).first()
    return active.filter(is_sandbox=False).first()


def capacity_check(*, version: WorkflowVersion, now: dt.datetime | None = None) -> CapacityReport:
    """The estimate for `version` as it would run in production."""
    from campaigns.models import SenderProfile

    now = now or timezone.now()
    ent = entrants(version, now)
    steps = version.steps
    pins = {}
    for pin in version.pins.select_related("template", "revision"):
        pins[pin.template.key] = pin.revision.kind

    def is_email(step: dict[str, Any]) -> int:
        return int(step.get("type") == "send_email" or (step.get("type") == "notify_sales" and bool(step.get("email"))))

    def is_marketing(step: dict[str, Any]) -> int:
        return int(step.get("type") == "send_email" and pins.get(str(step.get("template")), "marketing") == "marketing")

    resources: list[Resource] = []
    emails = path_max(steps, is_email)
    if emails[0]:
        sender = SenderProfile.objects.filter(is_default=True).first() or SenderProfile.objects.order_by("id").first()
        if sender is None:
            resources.append(Resource("sender", "", "(no sender profile)", ent.per_hour * emails[0],
                                      ent.per_day * emails[0], emails[1],
                                      [Limit("rate", "no sender profile", "", UNKNOWN, "email steps would fail")]))
        else:
            resources.append(_sender_resource(sender, emails, path_max(steps, is_marketing), ent, now))
    syncs = path_max(steps, lambda s: int(s.get("type") == "crm_sync"))
    if syncs[0]:
        conn = _connection_for(VersionState.PRODUCTION)
        if conn is None:
            resources.append(Resource("crm_connection", "", "(no active CRM connection)", ent.per_hour * syncs[0],
                                      ent.per_day * syncs[0], syncs[1],
                                      [Limit("rate limit", "no connection", "", UNKNOWN, "crm_sync steps do nothing")]))
        else:
            resources.append(_crm_resource(conn, syncs, ent, now))
    hosts = sorted({webhook_host(u) for s in steps for u in _webhook_urls(s)})
    for host in hosts:
        calls = path_max(steps, _calls_to(host))
        resources.append(Resource("webhook_host", host, host, ent.per_hour * calls[0], ent.per_day * calls[0],
                                  calls[1], [Limit("rate limit", "unknown (the receiver's own)",
                                                   f"{ent.per_hour * calls[0]:,.0f} calls/h", UNKNOWN,
                                                   "Leadflow does not throttle webhooks: ask the receiver")]))
    return CapacityReport(version.workflow.key, version.number, version.state, ent, resources)


def _calls_to(host: str) -> Callable[[dict[str, Any]], int]:
    return lambda step: sum(1 for url in _webhook_urls(step) if webhook_host(url) == host)


def _webhook_urls(step: dict[str, Any]) -> list[Any]:
    if step.get("type") == "webhook":
        return [step.get("url")]
    if step.get("type") == "notify_sales" and step.get("webhook"):
        return [step.get("webhook")]
    return []
