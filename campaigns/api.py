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

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse

from campaigns.services import BounceReport, bounces_record
from contacts.api.views import ApiError, _items, _reject_constant, api_view, read_json
from contacts.emails import normalize_email
from contacts.ingest import ItemInvalid, check_storable, event_source, unstorable
from contacts.models import ApiKey, ApiScope

log = logging.getLogger(__name__)

KINDS = ("hard", "soft", "complaint")
MAX_ADDRESS = 254  # RFC 5321's path limit; longer cannot be an address we sent to
MAX_DETAIL = 2000  # what the suppression and message rows keep
MAX_MESSAGE_ID = 998  # RFC 5322's line limit


@api_view(methods=("POST",), scope=ApiScope.BOUNCES_WRITE)
def bounces(request: HttpRequest, api_key: ApiKey) -> HttpResponse:
    # SNS posts its JSON as text/plain.
    data = read_json(request, content_types=("application/json", "text/plain"))
    if isinstance(data, dict) and "Type" in data:
        return _sns(data, api_key)
    reports, errors = [], []
    for index, item in enumerate(_items(data, "bounces")):
        try:
            reports.append(_report(item))
        except ItemInvalid as exc:
            errors.append({"index": index, "message": str(exc)})
    return _record(reports, errors, api_key)


def _record(reports: list[BounceReport], errors: list[dict[str, Any]], api_key: ApiKey) -> JsonResponse:
    result = bounces_record(reports=reports, source=event_source(api_key))
    return JsonResponse({"recorded": result.recorded, "suppressed": result.suppressed, "unknown": result.unknown,
                         "errors": errors}, status=202)


def _report(item: Any) -> BounceReport:
    if not isinstance(item, dict):
        raise ItemInvalid("must be an object")
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ItemInvalid(f"type: one of {', '.join(KINDS)}")
    return BounceReport(email=_address(item.get("email"), "email"), kind=kind,
                        detail=_text(item.get("reason"), "reason", MAX_DETAIL),
                        provider_message_id=_text(item.get("message_id"), "message_id", MAX_MESSAGE_ID))


def _address(value: Any, where: str) -> str:
    """An address the database can store and that could be a recipient of ours (valid and at most
    254 characters, RFC 5321), or an item error naming `where`."""
    if not isinstance(value, str) or "@" not in value:
        raise ItemInvalid(f"{where}: required, an email address")
    check_storable(value, where)
    try:
        normalize_email(value)
    except ValidationError:
        raise ItemInvalid(f"{where}: {value[:100]!r} is not a valid email address") from None
    if len(value.strip()) > MAX_ADDRESS:
        raise ItemInvalid(f"{where}: longer than {MAX_ADDRESS} characters")
    return value


def _text(value: Any, where: str, limit: int) -> str:
    """An optional string (null or absent: empty), storable, cut to `limit` characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ItemInvalid(f"{where}: must be a string")
    check_storable(value, where)
    return value[:limit]


# --- Amazon SES through SNS -----------------------------------------------------------------------
# Envelope: https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html (Type, MessageId,
# Message as a string, SubscribeURL for confirmations). Notification: https://docs.aws.amazon.com/ses/
# latest/dg/notification-contents.html (notificationType, or eventType for event publishing; mail.headers
# a list of {name, value}; bounce.bouncedRecipients and complaint.complainedRecipients lists of objects
# with emailAddress). SES may add fields, so unknown ones are ignored; the ones we read are type-checked.
# A malformed envelope or notification is a 400; one bad recipient is an item error (index in its list).


def _sns(envelope: dict[str, Any], api_key: ApiKey) -> HttpResponse:
    kind = envelope.get("Type")
    if kind == "SubscriptionConfirmation":
        url = envelope.get("SubscribeURL")
        if not isinstance(url, str) or unstorable(url):
            raise ApiError(400, "invalid_body", "SNS SubscriptionConfirmation needs SubscribeURL, a string")
        # Confirming means fetching SubscribeURL; we do not make outbound calls from a request.
        log.warning("SNS subscription confirmation received; confirm it by opening: %s", url[:2000])
        return JsonResponse({"status": "confirmation logged; open SubscribeURL to confirm"}, status=200)
    if kind != "Notification":
        shown = repr(kind)[:60] if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise ApiError(400, "invalid_body", f"unsupported SNS Type {shown} (Notification or SubscriptionConfirmation)")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise ApiError(400, "invalid_body", "SNS Message must be a string holding the SES notification JSON")
    try:
        notification = json.loads(message, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "invalid_body", "SNS Message is nested too deeply") from None
    except ValueError:
        raise ApiError(400, "invalid_body", "SNS Message is not JSON (expected an SES notification)") from None
    if not isinstance(notification, dict):
        raise ApiError(400, "invalid_body", "SNS Message must be an SES notification object")
    reports, errors = _ses_reports(notification)
    return _record(reports, errors, api_key)


def _ses_reports(notification: dict[str, Any]) -> tuple[list[BounceReport], list[dict[str, Any]]]:
    ntype = notification.get("notificationType") or notification.get("eventType")
    message_id = _ses_message_id(notification.get("mail"))
    if ntype == "Bounce":
        bounce = _ses_object(notification, "bounce")
        kind = "hard" if bounce.get("bounceType") == "Permanent" else "soft"
        subtype = bounce.get("bounceSubType")
        fallback = subtype if isinstance(subtype, str) else ""
        return _ses_recipients(bounce, "bounce", "bouncedRecipients", kind, "diagnosticCode", fallback, message_id)
    if ntype == "Complaint":
        complaint = _ses_object(notification, "complaint")
        feedback = complaint.get("complaintFeedbackType")
        detail = feedback if isinstance(feedback, str) else ""
        return _ses_recipients(complaint, "complaint", "complainedRecipients", "complaint", None, detail, message_id)
    shown = repr(ntype)[:60] if isinstance(ntype, str | None) else f"a {type(ntype).__name__}"
    raise ApiError(400, "invalid_body", f"unsupported SES notificationType {shown} (Bounce or Complaint)")


def _ses_object(notification: dict[str, Any], name: str) -> dict[str, Any]:
    value = notification.get(name)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f"SES notification: {name} must be an object")
    return value


def _ses_message_id(mail: Any) -> str:
    """Our Message-ID header as SES echoes it back in mail.headers (SES's own mail.messageId is not
    our header; it is the fallback)."""
    if mail is None:
        return ""
    if not isinstance(mail, dict):
        raise ApiError(400, "invalid_body", "SES notification: mail must be an object")
    headers = mail.get("headers") or []
    if not isinstance(headers, list):
        raise ApiError(400, "invalid_body", "SES notification: mail.headers must be a list")
    message_id = mail.get("messageId")
    message_id = message_id if isinstance(message_id, str) else ""
    for header in headers:
        if isinstance(header, dict) and isinstance(header.get("name"), str) \
                and header["name"].lower() == "message-id" and isinstance(header.get("value"), str):
            message_id = header["value"]
    return "" if unstorable(message_id) else message_id[:MAX_MESSAGE_ID]


def _ses_recipients(parent: dict[str, Any], name: str, field: str, kind: str, detail_field: str | None,
                    fallback: str, message_id: str) -> tuple[list[BounceReport], list[dict[str, Any]]]:
    recipients = parent.get(field)
    if not isinstance(recipients, list):
        raise ApiError(400, "invalid_body", f"SES notification: {name}.{field} must be a list")
    reports, errors = [], []
    for index, recipient in enumerate(recipients):
        where = f"{name}.{field}[{index}]"
        try:
            if not isinstance(recipient, dict):
                raise ItemInvalid(f"{where}: must be an object")
            detail = _text(recipient.get(detail_field), f"{where}.{detail_field}", MAX_DETAIL) if detail_field \
                else ""
            reports.append(BounceReport(email=_address(recipient.get("emailAddress"), f"{where}.emailAddress"),
                                        kind=kind, detail=detail or _text(fallback, name, MAX_DETAIL),
                                        provider_message_id=message_id))
        except ItemInvalid as exc:
            errors.append({"index": index, "message": str(exc)})
    return reports, errors
