"""Public email endpoints: open pixel, click redirect, unsubscribe. No login: each URL carries a
signed token (campaigns/tracking.py); requests are rate limited (below); bodies are size limited.

Rate limits: the signature is checked first (an HMAC, cheaper than the Redis round trip). A token
that is not valid counts against its client IP, a wall for someone guessing tokens. A valid token
is one recipient's link, so it counts against that token only, never against the IP: behind a
reverse proxy every recipient shares the proxy's address, and a flood from one client must not
refuse another recipient's unsubscribe (RFC 8058 one-click POSTs come from the mailbox provider's
servers, many recipients per address)."""

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
from consent.preferences import preference_center
from core.throttle import Rate, Throttle

# 1x1 transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_BODY = 1024
# Invalid tokens, per client IP, shared by all web processes: room for a proxy's worth of broken
# links (a mangled URL), a wall for someone enumerating tokens.
PUBLIC_RATE = Rate(count=20, period=1, burst=100)
# Valid tokens, per message and purpose: a recipient (or a newsletter forwarded to a team) opens,
# clicks and unsubscribes a few times; a script replaying one link is slowed to one a second.
TOKEN_RATE = Rate(count=1, period=1, burst=20)


def client_throttle(ip: str) -> Throttle:
    return Throttle(f"public:ip:{ip}", PUBLIC_RATE)


def token_throttle(purpose: str, message_id: int) -> Throttle:
    return Throttle(f"public:token:{purpose}:{message_id}", TOKEN_RATE)


def _refused(throttle: Throttle) -> bool:
    try:
        return not throttle.take(1).granted
    except RedisError:
        return False  # tracking must not break mail rendering when Redis is down


def _ip_limited(request: HttpRequest) -> bool:
    """A request with an invalid token: counted against the client IP (behind TRUSTED_PROXY_COUNT
    proxies the visitor's, from X-Forwarded-For: with REMOTE_ADDR every client would share the
    proxy's budget)."""
    from core.login_throttle import client_ip

    return _refused(client_throttle(client_ip(request) or "unknown"))


def _token_limited(purpose: str, message_id: int) -> bool:
    """A request with a valid token: counted against that token only."""
    return _refused(token_throttle(purpose, message_id))


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
    try:
        message_id = tracking.open_token_read(token)
    except tracking.BadToken:
        return _too_many() if _ip_limited(request) else HttpResponse(status=404)
    # Over the token's limit the pixel is still served (a broken image helps no one); the open
    # is not recorded again, which is all the limit protects.
    if request.method == "GET" and not _token_limited("open", message_id):
        services.tracking_open(message_id=message_id)
    return _pixel()


@never_cache
@require_http_methods(["GET", "HEAD"])
def click(request: HttpRequest, token: str) -> HttpResponse:
    try:
        message_id, index = tracking.click_token_read(token)
    except tracking.BadToken:
        if _ip_limited(request):
            return _too_many()
        raise Http404("This link is not valid.") from None
    # Over the token's limit a person clicking still gets where the link goes; only the recording
    # (the writes) is skipped. Only a URL stored with the message: a forged index cannot lead elsewhere.
    record = request.method == "GET" and not _token_limited("click", message_id)
    url = services.tracking_click(message_id=message_id, index=index) if record else None
    if not record:
        message = Message.objects.filter(pk=message_id).only("links").first()
        url = message.links[index] if message and 0 <= index < len(message.links) else None
    if url is None:
        raise Http404("This link is not valid.")
    return HttpResponseRedirect(url)


@never_cache
@csrf_exempt  # the signed token is the credential; mailbox providers POST without cookies (RFC 8058)
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    if _content_length(request) > MAX_BODY:
        return HttpResponse("Request too large", status=413, content_type="text/plain")
    try:
        message_id = tracking.unsubscribe_token_read(token)
    except tracking.BadToken:
        if _ip_limited(request):
            return _too_many()
        return render(request, "campaigns/unsubscribe.html", {"invalid": True}, status=404)
    if _token_limited("unsubscribe", message_id):
        return _too_many()
    message = Message.objects.select_related("contact", "template", "revision").filter(pk=message_id).first()
    if message is None:
        return render(request, "campaigns/unsubscribe.html", {"invalid": True}, status=404)
    # GET only shows the page (the preference center: topics, or unsubscribe from all): link
    # scanners and previews follow GETs; any change takes a POST (the page's buttons, or a mailbox
    # provider's one-click POST, which leaves the topic or all as the topic says: consent/preferences.py).
    return preference_center(request, message, masked_email=_masked(message.to_email or message.contact.email))


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return MAX_BODY + 1  # unreadable length: treat as too large


def _masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:2]}{'*' * max(1, len(local) - 2)}@{domain}"
