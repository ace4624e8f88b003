"""A sender profile's rules as plain functions: validation, throttles, quiet hours, warm-up."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import TYPE_CHECKING

import environ

from core.throttle import Rate, Throttle, parse_rate

if TYPE_CHECKING:
    from campaigns.models import SenderProfile


def sender_validate(sender: SenderProfile) -> dict[str, str]:
    """Field -> message for every rule that does not hold (empty when valid)."""
    errors: dict[str, str] = {}
    try:
        parse_rate(sender.rate)
    except ValueError as exc:
        errors["rate"] = str(exc)
    if not isinstance(sender.domain_limits, dict):
        errors["domain_limits"] = 'must be an object like {"gmail.com": "20/s"}'
    else:
        for domain, rate in sender.domain_limits.items():
            try:
                parse_rate(str(rate))
            except ValueError as exc:
                errors["domain_limits"] = f"{domain}: {exc}"
    schedule = sender.warmup_schedule
    if not isinstance(schedule, list) or not all(isinstance(n, int) and n > 0 for n in schedule):
        errors["warmup_schedule"] = "must be a list of positive daily caps, e.g. [500, 1000, 2000]"
    elif schedule and not sender.warmup_started_on:
        errors["warmup_started_on"] = "set the first day of the warm-up schedule"
    try:
        zoneinfo.ZoneInfo(sender.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors["time_zone"] = f"{sender.time_zone!r} is not a time zone (use e.g. Europe/Berlin)"
    if (sender.quiet_hours_start is None) != (sender.quiet_hours_end is None):
        errors["quiet_hours_end"] = "set both ends of the quiet hours, or neither"
    if sender.email_url:
        try:
            backend_config(sender.email_url)
        except Exception as exc:  # noqa: BLE001  environ raises several kinds for a bad URL
            errors["email_url"] = f"not a usable email URL: {exc}"
    return errors


def backend_config(email_url: str) -> dict[str, object]:
    """An EMAIL_URL-style string -> Django email backend kwargs (django-environ's parser)."""
    config = environ.Env.email_url_config(email_url)
    return {
        "backend": config["EMAIL_BACKEND"],
        "host": config.get("EMAIL_HOST") or "localhost",
        "port": config.get("EMAIL_PORT") or 25,
        "username": config.get("EMAIL_HOST_USER") or "",
        "password": config.get("EMAIL_HOST_PASSWORD") or "",
        "use_tls": bool(config.get("EMAIL_USE_TLS")),
        "use_ssl": bool(config.get("EMAIL_USE_SSL")),
    }


def sender_throttle(sender: SenderProfile) -> Throttle:
    return Throttle(f"sender:{sender.pk}", parse_rate(sender.rate, burst=sender.burst))


def domain_throttles(sender: SenderProfile) -> dict[str, Throttle]:
    limits = sender.domain_limits if isinstance(sender.domain_limits, dict) else {}
    return {
        domain.lower(): Throttle(f"sender:{sender.pk}:domain:{domain.lower()}", parse_rate(str(rate)))
        for domain, rate in limits.items()
    }


def quiet_until(sender: SenderProfile, now: dt.datetime) -> dt.datetime | None:
    """When quiet hours are on at `now`, the moment they end; otherwise None."""
    start, end = sender.quiet_hours_start, sender.quiet_hours_end
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(zoneinfo.ZoneInfo(sender.time_zone))
    t = local.time()
    quiet = (start <= t < end) if start < end else (t >= start or t < end)  # e.g. 21:00-08:00
    if not quiet:
        return None
    end_day = local.date() if t < end else local.date() + dt.timedelta(days=1)
    ends = dt.datetime.combine(end_day, end, tzinfo=local.tzinfo)
    return ends.astimezone(dt.UTC)


def warmup_cap(sender: SenderProfile, today: dt.date) -> int | None:
    """Today's cap while warming up (None: no cap). Past the schedule's end there is no cap."""
    if not sender.warmup_schedule or not sender.warmup_started_on:
        return None
    day = (today - sender.warmup_started_on).days
    if day < 0:
        return 0  # warm-up starts later: nothing goes out before day 1
    if day >= len(sender.warmup_schedule):
        return None
    return int(sender.warmup_schedule[day])


def rate_of(sender: SenderProfile) -> Rate:
    return parse_rate(sender.rate, burst=sender.burst)
