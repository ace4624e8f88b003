"""POST /api/v1/bounces: bounce and complaint reports, authenticated with an API key.

Two formats, told apart by their shape:
- Leadflow's own: {"bounces": [{"email": ..., "type": "hard"|"soft"|"complaint",
  "message_id": <provider Message-ID, optional>, "reason": <diagnostic, optional>}, ...]}
- Amazon SES through an SNS HTTPS subscription: the SNS envelope ({"Type": "Notification",
  "Message": "<SES notification JSON>"}) with notificationType Bounce or Complaint.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from campaigns.services import BounceReport, bounces_record
from contacts.api.views import ApiError, _items, api_view, read_json
from contacts.ingest import event_source
from contacts.models import ApiKey

log = logging.getLogger(__name__)

KINDS = ("hard", "soft", "complaint")


@api_view(methods=("POST",))
def bounces(request: HttpRequest, api_key: ApiKey) -> HttpResponse:
    # SNS posts its JSON as text/plain.
    data = read_json(request, content_types=("application/json", "text/plain"))
    if isinstance(data, dict) and "Type" in data:
        return _sns(data, api_key)
    reports, errors = [], []
    for index, item in enumerate(_items(data, "bounces")):
        try:
            reports.append(_report(item))
        except ValueError as exc:
            errors.append({"index": index, "message": str(exc)})
    result = bounces_record(reports=reports, source=event_source(api_key))
    return JsonResponse({"recorded": result.recorded, "suppressed": result.suppressed, "unknown": result.unknown,
                         "errors": errors}, status=202)


def _report(item: Any) -> BounceReport:
    if not isinstance(item, dict):
        raise ValueError("must be an object")
    email, kind = item.get("email"), item.get("type")
    if not isinstance(email, str) or "@" not in email:
        raise ValueError("email: required, an email address")
    if kind not in KINDS:
        raise ValueError(f"type: one of {', '.join(KINDS)}")
    message_id, reason = item.get("message_id") or "", item.get("reason") or ""
    if not isinstance(message_id, str) or not isinstance(reason, str):
        raise ValueError("message_id and reason: strings")
    return BounceReport(email=email, kind=kind, detail=reason, provider_message_id=message_id)


def _sns(envelope: dict[str, Any], api_key: ApiKey) -> HttpResponse:
    kind = envelope.get("Type")
    if kind == "SubscriptionConfirmation":
        # Confirming means fetching SubscribeURL; we do not make outbound calls from a request.
        log.warning("SNS subscription confirmation received; confirm it by opening: %s", envelope.get("SubscribeURL"))
        return JsonResponse({"status": "confirmation logged; open SubscribeURL to confirm"}, status=200)
    if kind != "Notification":
        raise ApiError(400, "invalid_body", f"unsupported SNS message type {kind!r}")
    try:
        notification = json.loads(envelope.get("Message") or "")
    except ValueError:
        raise ApiError(400, "invalid_body", "SNS Message is not JSON (expected an SES notification)") from None
    if not isinstance(notification, dict):
        raise ApiError(400, "invalid_body", "SNS Message must be an SES notification object")
    reports = _ses_reports(notification)
    result = bounces_record(reports=reports, source=event_source(api_key))
    return JsonResponse({"recorded": result.recorded, "suppressed": result.suppressed, "unknown": result.unknown,
                         "errors": []}, status=202)


def _ses_reports(notification: dict[str, Any]) -> list[BounceReport]:
    ntype = notification.get("notificationType") or notification.get("eventType")
    message_id = str((notification.get("mail") or {}).get("messageId") or "")
    # SES's own id is not our Message-ID header; the headers SES echoes back carry it.
    for header in (notification.get("mail") or {}).get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            message_id = str(header.get("value") or message_id)
    if ntype == "Bounce":
        bounce = notification.get("bounce") or {}
        kind = "hard" if bounce.get("bounceType") == "Permanent" else "soft"
        return [BounceReport(email=str(r.get("emailAddress", "")), kind=kind,
                             detail=str(r.get("diagnosticCode") or bounce.get("bounceSubType") or ""),
                             provider_message_id=message_id)
                for r in bounce.get("bouncedRecipients") or [] if isinstance(r, dict) and r.get("emailAddress")]
    if ntype == "Complaint":
        complaint = notification.get("complaint") or {}
        return [BounceReport(email=str(r.get("emailAddress", "")), kind="complaint",
                             detail=str(complaint.get("complaintFeedbackType") or ""), provider_message_id=message_id)
                for r in complaint.get("complainedRecipients") or [] if isinstance(r, dict) and r.get("emailAddress")]
    raise ApiError(400, "invalid_body", f"unsupported SES notification type {ntype!r} (Bounce or Complaint)")
