"""POST /api/v1/campaigns/<key>/send: send an approved broadcast as scheduled, for automation (CI,
a CMS publishing hook). Needs an API key with the campaigns:send scope. The same as the admin's
"Send" and `manage.py broadcast_send <key>`; see docs/broadcasts.md."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse

from broadcasts.models import Broadcast
from broadcasts.services import broadcast_send
from contacts.api.views import ApiError, api_view
from contacts.models import ApiKey, ApiScope


@api_view(methods=("POST",), scope=ApiScope.CAMPAIGNS_SEND)
def send(request: HttpRequest, api_key: ApiKey, key: str) -> HttpResponse:
    broadcast = Broadcast.objects.select_related("sender").filter(key=key).first()
    if broadcast is None:
        raise ApiError(404, "not_found", f"no broadcast with key {key[:100]!r}")
    try:
        broadcast = broadcast_send(broadcast=broadcast, actor=f"api:{api_key.name}")
    except ValidationError as exc:
        # A wrong state (a draft, already sent, changed since approval) is a conflict; the rest
        # (a schedule in the past, an empty audience) is input the client can fix.
        status, code = (409, "conflict") if getattr(exc, "code", None) == "state" else (422, "invalid")
        raise ApiError(status, code, " ".join(exc.messages)) from None
    return JsonResponse({"key": broadcast.key, "status": broadcast.status, "schedule": broadcast.schedule,
                         "send_at": broadcast.send_at.isoformat() if broadcast.send_at else None,
                         "recipients": broadcast.recipients_total}, status=202)
