"""Inbound CRM webhook: POST /api/v1/crm/<connection id>/status, signed with the connection's secret.

Headers: X-Leadflow-Timestamp (unix seconds, within 5 minutes) and X-Leadflow-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">. Body: {"changes": [{"email", "status":
accepted|rejected|closed, "occurred_at"?, "id"?, "reason"?, "outcome"?}]}. Thin: authenticate,
rate-limit, parse, call one service, answer JSON; bad input is a 4xx naming the problem.
"""

from __future__ import annotations

import json
import math

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from automation.crm.models import CrmConnection
from automation.crm.services import MAX_INBOUND, crm_inbound_status
from automation.crm.vault import SecretUnavailable, decrypt
from core.throttle import Throttle, parse_rate
from core.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

MAX_BODY = 512 * 1024
INBOUND_RATE = "600/m"


def _error(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _verified(request: HttpRequest, connection: CrmConnection, body: bytes) -> bool:
    try:
        secret = decrypt(connection.signing_secret_encrypted)
    except SecretUnavailable:
        return False
    return verify(secret, request.headers.get(TIMESTAMP_HEADER, ""), request.headers.get(SIGNATURE_HEADER, ""), body)


@csrf_exempt
def inbound_status(request: HttpRequest, connection_id: int) -> HttpResponse:
    if request.method != "POST":
        return _error(405, "method_not_allowed", "use POST", Allow="POST")
    connection = CrmConnection.objects.filter(pk=connection_id, is_active=True).first()
    length = request.headers.get("Content-Length") or "0"
    if not length.isdigit() or int(length) > MAX_BODY:
        return _error(413, "too_large", f"at most {MAX_BODY} bytes per call")
    body = request.body
    if connection is None or not _verified(request, connection, body):
        return _error(401, "unauthorized", "sign the body with the connection's secret (see docs/crm.md)")
    grant = Throttle(f"crm-inbound:{connection.pk}", parse_rate(INBOUND_RATE, burst=60)).take(1)
    if not grant.granted:
        retry = str(max(1, math.ceil(grant.wait)))
        return _error(429, "rate_limited", f"retry after {retry} s", Retry_After=retry)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "invalid_json", "the body is not JSON")
    changes = data.get("changes") if isinstance(data, dict) else None
    if not isinstance(changes, list) or not changes:
        return _error(400, "invalid", 'send {"changes": [...]}, a non-empty list')
    if len(changes) > MAX_INBOUND:
        return _error(400, "too_many", f"at most {MAX_INBOUND} changes per call")
    result = crm_inbound_status(connection=connection, items=changes)
    response = JsonResponse({"accepted": result.accepted, "duplicates": result.duplicates, "errors": result.errors},
                            status=200 if not result.errors else 207)
    response["Cache-Control"] = "no-store"
    return response
