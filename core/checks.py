"""Deployment checks of our own (`manage.py check --deploy`).

SITE_URL is where every link in every email points, the RFC 8058 one-click unsubscribe URL
included. Served over http with DEBUG off, SECURE_SSL_REDIRECT (on by default then) answers the
mailbox provider's one-click POST with a 301 to https, which providers do not follow: the
unsubscribe silently fails, the recipient reports spam instead. So an http SITE_URL is an error,
not a warning, in production.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register

E_SITE_URL_HTTP = "leadflow.E001"


@register(Tags.security, deploy=True)
def site_url_is_https(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if settings.DEBUG or urlsplit(settings.SITE_URL).scheme == "https":
        return []
    redirect = " SECURE_SSL_REDIRECT is on, so" if settings.SECURE_SSL_REDIRECT else ""
    return [Error(
        f"SITE_URL is {settings.SITE_URL!r}, not https.{redirect} a mailbox provider's one-click unsubscribe "
        "POST (RFC 8058) to it is answered by a redirect, which providers do not follow, and every tracking "
        "link in every email is plain http.",
        hint="Set SITE_URL to the public https:// address (TLS may end at a proxy: BEHIND_TLS_PROXY=true).",
        id=E_SITE_URL_HTTP,
    )]
