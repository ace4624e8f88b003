"""Admin login throttling with django-axes (settings: LOGIN_* in config/settings.py, README).

Two limits: failures of one username from one address (LOGIN_FAILURE_LIMIT) lock that pair
out, so a colleague's typos at the same office address lock nobody else; failures from one
address over any usernames (LOGIN_IP_FAILURE_LIMIT, higher) lock the address, so spraying one
password over many accounts stops too. Both last LOGIN_COOLOFF_MINUTES after the last failure.
The lockout is the login page with a message (429), and it is audited once per lockout.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from core.audit import audit_record
from core.models import AuditEntry

LOCKOUT_ACTION = "login.locked_out"


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or with TRUSTED_PROXY_COUNT proxies in front, the address the
    outermost of them saw (X-Forwarded-For, counted from the right: entries further left are the
    client's to forge)."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR")


class LoginThrottleHandler(AxesDatabaseHandler):
    """axes' database handler with a second, higher limit for the address alone.

    AXES_LOCKOUT_PARAMETERS is [[username, ip_address], ip_address]; axes compares the largest
    count with one limit, so the address's count only locks once it reaches its own limit."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        pair, address = (
            attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        if address >= settings.LOGIN_IP_FAILURE_LIMIT:
            return max(pair, settings.AXES_FAILURE_LIMIT)
        return pair


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """The admin login page again, saying why and for how long, with 429 (AXES_LOCKOUT_CALLABLE)."""
    username = get_client_username(request, credentials) or ""
    cool_off = get_cool_off(request) or timedelta(0)
    _audit_once(request, username, cool_off)
    minutes = max(1, int(cool_off.total_seconds() // 60))
    context = {
        **_admin_context(request),
        "form": AdminAuthenticationForm(request, initial={"username": username}),
        "lockout_minutes": minutes,
        "title": "Log in",
    }
    return render(request, "admin/login_locked_out.html", context, status=429)


def _admin_context(request: HttpRequest) -> dict[str, Any]:
    from django.contrib import admin

    return {**admin.site.each_context(request), "app_path": request.get_full_path(), "username": ""}


def _audit_once(request: HttpRequest, username: str, cool_off: timedelta) -> None:
    """One audit entry per lockout (not per refused attempt): none yet for this pair in the window."""
    ip = getattr(request, "axes_ip_address", None) or client_ip(request) or ""
    since = timezone.now() - cool_off
    target_id = username[:64]
    if AuditEntry.objects.filter(action=LOCKOUT_ACTION, target_id=target_id, data__ip=ip, at__gte=since).exists():
        return
    failures = getattr(request, "axes_failures_since_start", None)
    audit_record(actor=f"login:{username}"[:150], action=LOCKOUT_ACTION, target=("auth.user", target_id),
                 data={"ip": ip, "failures": failures, "cool_off_minutes": int(cool_off.total_seconds() // 60)})
