"""POST /api/v1/bounces: bounce and complaint reports, authenticated with an API key.

Three formats, told apart by their shape:
- Leadflow's own: {"bounces": [{"email": ..., "type": "hard"|"soft"|"complaint",
  "message_id": <our Message-ID header or the provider's id, optional>, "reason": <diagnostic, optional>}, ...]}
- Amazon SES through an SNS HTTPS subscription: the SNS envelope ({"Type": "Notification",
  "Message": "<SES notification JSON>"}, or a subscription/unsubscribe confirmation), signed by SNS
  and checked against SNS_TOPIC_ARNS (campaigns/sns.py).
- The same SES notification without the envelope (SNS "raw message delivery"): nothing is signed
  then, so the API key is its only authentication (see docs/delivery.md).

A 401 asks for Basic credentials: SNS sends the user:password of an HTTPS subscription URL only
after such a challenge.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from campaigns import sns
from campaigns.services import BounceReport, DeliveryReport, bounces_record, deliveries_record
from contacts.api.views import ApiError, _items, _reject_constant, api_view, read_json
from contacts.emails import normalize_email
from contacts.ingest import ItemInvalid, check_storable, event_source, unstorable
from contacts.models import ApiKey, ApiScope

log = logging.getLogger(__name__)

KINDS = ("hard", "soft", "complaint")
MAX_ADDRESS = 254  # RFC 5321's path limit; longer cannot be an address we sent to
MAX_DETAIL = 2000  # what the suppression and message rows keep
MAX_MESSAGE_ID = 998  # RFC 5322's line limit


@api_view(methods=("POST",), scope=ApiScope.BOUNCES_WRITE, challenge="Basic")
def bounces(request: HttpRequest, api_key: ApiKey) -> HttpResponse:
    # SNS posts its JSON as text/plain.
    data = read_json(request, content_types=("application/json", "text/plain"))
    if isinstance(data, dict) and "Type" in data:
        return _sns(data, api_key)
    if isinstance(data, dict) and ("notificationType" in data or "eventType" in data):
        return _ses_raw(request, data, api_key)
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
    message_id = _text(item.get("message_id"), "message_id", MAX_MESSAGE_ID)
    # Either our Message-ID header or the id the provider answered the send with: both are tried.
    return BounceReport(email=_address(item.get("email"), "email"), kind=kind,
                        detail=_text(item.get("reason"), "reason", MAX_DETAIL),
                        provider_message_id=message_id, relay_message_id=message_id)


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
# latest/dg/notification-contents.html (notificationType, or eventType for event publishing; mail.messageId
# the id SES answered the send with; mail.headers a list of {name, value}; bounce.bouncedRecipients and
# complaint.complainedRecipients lists of objects with emailAddress; delivery.recipients a list of
# addresses). SES may add fields, so unknown ones are ignored; the ones we read are type-checked.
# A malformed envelope or notification is a 400; one bad recipient is an item error (index in its list).
# SES notification types other than Bounce, Complaint and Delivery are acknowledged and ignored.


def _sns(envelope: dict[str, Any], api_key: ApiKey) -> HttpResponse:
    try:
        kind = sns.sns_verify(envelope)
        if kind == sns.SUBSCRIPTION_CONFIRMATION:
            sns.subscription_confirm(envelope)
            return JsonResponse({"status": "subscription confirmed", "topic": envelope["TopicArn"]})
    except sns.SnsRejected as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    if kind == sns.UNSUBSCRIBE_CONFIRMATION:
        # Visiting its SubscribeURL would subscribe again: an unsubscribe is only noted.
        log.warning("SNS: this endpoint was unsubscribed from %s", envelope["TopicArn"])
        return JsonResponse({"status": "unsubscribe noted", "topic": envelope["TopicArn"]})
    try:
        notification = json.loads(envelope["Message"], parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "invalid_body", "SNS Message is nested too deeply") from None
    except ValueError:
        raise ApiError(400, "invalid_body", "SNS Message is not JSON (expected an SES notification)") from None
    if not isinstance(notification, dict):
        raise ApiError(400, "invalid_body", "SNS Message must be an SES notification object")
    with transaction.atomic():  # the MessageId is recorded with the work, or neither (campaigns/sns.py)
        if not sns.sns_notification_claim(envelope):
            return JsonResponse({"status": "duplicate", "message_id": envelope["MessageId"]}, status=202)
        return _ses(notification, api_key)


def _ses_raw(request: HttpRequest, notification: dict[str, Any], api_key: ApiKey) -> HttpResponse:
    """SNS raw message delivery: the SES JSON alone, unsigned. SNS still names the topic in a
    header (unsigned too): a topic outside SNS_TOPIC_ARNS is a subscription pointed at the wrong
    place, refused like a signed one."""
    topic = request.headers.get("x-amz-sns-topic-arn")
    if topic is not None and topic not in settings.SNS_TOPIC_ARNS:
        raise ApiError(403, "topic_not_allowed", f"SNS topic {topic[:200]!r} is not in SNS_TOPIC_ARNS")
    return _ses(notification, api_key)


def _ses(notification: dict[str, Any], api_key: ApiKey) -> HttpResponse:
    ntype = notification.get("notificationType") or notification.get("eventType")
    if not isinstance(ntype, str):
        shown = "missing" if ntype is None else f"a {type(ntype).__name__}"
        raise ApiError(400, "invalid_body", f"SES notification: notificationType must be a string ({shown})")
    ids = _ses_ids(notification.get("mail"))
    if ntype == "Delivery":
        return _ses_delivery(notification, ids)
    if ntype not in ("Bounce", "Complaint"):
        return JsonResponse({"ignored": ntype[:60]}, status=202)
    reports, errors = _ses_reports(notification, ntype, ids)
    return _record(reports, errors, api_key)


def _ses_reports(notification: dict[str, Any], ntype: str,
                 ids: dict[str, Any]) -> tuple[list[BounceReport], list[dict[str, Any]]]:
    if ntype == "Bounce":
        bounce = _ses_object(notification, "bounce")
        kind = "hard" if bounce.get("bounceType") == "Permanent" else "soft"
        subtype = bounce.get("bounceSubType")
        fallback = subtype if isinstance(subtype, str) else ""
        return _ses_recipients(bounce, "bounce", "bouncedRecipients", kind, "diagnosticCode", fallback, ids)
    complaint = _ses_object(notification, "complaint")
    feedback = complaint.get("complaintFeedbackType")
    detail = feedback if isinstance(feedback, str) else ""
    return _ses_recipients(complaint, "complaint", "complainedRecipients", "complaint", None, detail, ids)


def _ses_delivery(notification: dict[str, Any], ids: dict[str, Any]) -> HttpResponse:
    delivery = _ses_object(notification, "delivery")
    recipients = delivery.get("recipients")
    if not isinstance(recipients, list):
        raise ApiError(400, "invalid_body", "SES notification: delivery.recipients must be a list")
    reports, errors = [], []
    for index, address in enumerate(recipients):
        try:
            reports.append(DeliveryReport(email=_address(address, f"delivery.recipients[{index}]"), **ids))
        except ItemInvalid as exc:
            errors.append({"index": index, "message": str(exc)})
    result = deliveries_record(reports=reports)
    return JsonResponse({"delivered": result.delivered, "unknown": result.unknown, "errors": errors}, status=202)


def _ses_object(notification: dict[str, Any], name: str) -> dict[str, Any]:
    value = notification.get(name)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f"SES notification: {name} must be an object")
    return value


def _ses_ids(mail: Any) -> dict[str, Any]:
    """What names the message we sent: SES's own id (mail.messageId, which SES answered our SMTP
    DATA with), and our Message-ID and X-Leadflow-Message headers when SES echoes the headers
    back ("include original headers")."""
    ids: dict[str, Any] = {"relay_message_id": "", "provider_message_id": "", "leadflow_id": None}
    if mail is None:
        return ids
    if not isinstance(mail, dict):
        raise ApiError(400, "invalid_body", "SES notification: mail must be an object")
    headers = mail.get("headers") or []
    if not isinstance(headers, list):
        raise ApiError(400, "invalid_body", "SES notification: mail.headers must be a list")
    ids["relay_message_id"] = _storable_id(mail.get("messageId"))
    for header in headers:
        if not (isinstance(header, dict) and isinstance(header.get("name"), str)
                and isinstance(header.get("value"), str)):
            continue
        name, value = header["name"].lower(), header["value"]
        if name == "message-id":
            ids["provider_message_id"] = _storable_id(value)
        elif name == "x-leadflow-message" and value.strip().isascii() and value.strip().isdigit():
            ids["leadflow_id"] = int(value.strip()[:18])
    return ids


def _storable_id(value: Any) -> str:
    return value[:MAX_MESSAGE_ID] if isinstance(value, str) and not unstorable(value) else ""


def _ses_recipients(parent: dict[str, Any], name: str, field: str, kind: str, detail_field: str | None,
                    fallback: str, ids: dict[str, Any]) -> tuple[list[BounceReport], list[dict[str, Any]]]:
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
                                        kind=kind, detail=detail or _text(fallback, name, MAX_DETAIL), **ids))
        except ItemInvalid as exc:
            errors.append({"index": index, "message": str(exc)})
    return reports, errors
