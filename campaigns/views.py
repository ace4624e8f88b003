"""Public email endpoints: open pixel, click redirect, unsubscribe. No login: each URL carries a
signed token (campaigns/tracking.py); each client IP is rate limited; bodies are size limited."""

from __future__ import annotations

import base64

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from redis.exceptions import RedisError

from campaigns import services, tracking
from campaigns.models import Message
from core.throttle import Rate, Throttle

# 1x1 transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_BODY = 1024
# Per client IP, shared by all web processes: generous for real mail clients and proxies
# (an office behind one NAT opening a newsletter), a wall for someone enumerating tokens.
PUBLIC_RATE = Rate(count=20, period=1, burst=100)


def _limited(request: HttpRequest) -> bool:
    ip = request.META.get("REMOTE_ADDR", "unknown")
    try:
        return not Throttle(f"public:{ip}", PUBLIC_RATE).take(1).granted
    except RedisError:
        return False  # tracking must not break mail rendering when Redis is down


def _too_many() -> HttpResponse:
    response = HttpResponse("Too many requests", status=429, content_type="text/plain")
    response["Retry-After"] = "1"
    return response


def _pixel() -> HttpResponse:
    response = HttpResponse(PIXEL, content_type="image/gif")
    response["Cache-Control"] = "no-store, private"
    return response


@never_cache
@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    if _limited(request):
        return _too_many()
    try:
        message_id = tracking.open_token_read(token)
    except tracking.BadToken:
        return HttpResponse(status=404)
    if request.method == "GET":
        services.tracking_open(message_id=message_id)
    return _pixel()


@never_cache
@require_http_methods(["GET", "HEAD"])
def click(request: HttpRequest, token: str) -> HttpResponse:
    if _limited(request):
        return _too_many()
    try:
        message_id, index = tracking.click_token_read(token)
    except tracking.BadToken:
        raise Http404("This link is not valid.") from None
    # Only a URL stored with the message: a forged index or message cannot lead elsewhere.
    url = services.tracking_click(message_id=message_id, index=index) if request.method == "GET" else None
    if url is None and request.method == "HEAD":
        message = Message.objects.filter(pk=message_id).only("links").first()
        url = message.links[index] if message and 0 <= index < len(message.links) else None
    if url is None:
        raise Http404("This link is not valid.")
    return HttpResponseRedirect(url)


@never_cache
@csrf_exempt  # the signed token is the credential; mailbox providers POST without cookies (RFC 8058)
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    if _limited(request):
        return _too_many()
    if _content_length(request) > MAX_BODY:
        return HttpResponse("Request too large", status=413, content_type="text/plain")
    try:
        message_id = tracking.unsubscribe_token_read(token)
    except tracking.BadToken:
        return render(request, "campaigns/unsubscribe.html", {"invalid": True}, status=404)
    message = Message.objects.select_related("contact").filter(pk=message_id).first()
    if message is None:
        return render(request, "campaigns/unsubscribe.html", {"invalid": True}, status=404)
    # GET only shows the page: link scanners and previews follow GETs; unsubscribing takes a POST
    # (the page's button, or a mailbox provider's one-click POST).
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        services.contact_unsubscribe(contact=message.contact, message=message,
                                     source="one-click unsubscribe" if one_click else "unsubscribe page")
        return render(request, "campaigns/unsubscribe.html", {"done": True})
    return render(request, "campaigns/unsubscribe.html", {"email": _masked(message.to_email or message.contact.email)})


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return MAX_BODY + 1  # unreadable length: treat as too large


def _masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:2]}{'*' * max(1, len(local) - 2)}@{domain}"
