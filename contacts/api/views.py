"""The public JSON API (/api/v1/): events in, contacts in and out. Thin views: authenticate,
rate-limit, parse and shape-check the body, call one service, answer JSON. Bad input is a 4xx
with a message naming the problem, never a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from contacts.api.openapi import openapi_schema
from contacts.api.ratelimit import rate_limit_hit
from contacts.apikeys import api_key_authenticate
from contacts.emails import normalize_email
from contacts.ingest import MAX_BODY_BYTES, MAX_EVENTS, contacts_upsert, events_ingest
from contacts.models import ApiKey, ApiScope, Contact, SegmentMembership
from core import tracing

ApiView = Callable[..., HttpResponse]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> JsonResponse:
        response = JsonResponse({"error": {"code": self.code, "message": self.message}}, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def api_view(*, methods: tuple[str, ...], scope: ApiScope,
             challenge: str = "Bearer") -> Callable[[ApiView], ApiView]:
    """CSRF-exempt (no cookies are used), method-checked, key-authenticated, scope-checked (the key
    must hold `scope`: required, so no endpoint is open to every key by omission) and rate-limited.
    `challenge`: the scheme a 401 asks for; "Basic" for webhook senders that send the credentials
    of their URL only after a Basic challenge (Amazon SNS)."""

    def decorator(view: ApiView) -> ApiView:
        @csrf_exempt
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ApiError(405, "method_not_allowed", f"use {' or '.join(methods)}",
                                   {"Allow": ", ".join(methods)})
                api_key = _authenticate(request, challenge)
                _check_scope(api_key, scope)
                _check_rate(api_key)
                response = view(request, api_key, *args, **kwargs)
            except ApiError as exc:
                response = exc.response()
            response["Cache-Control"] = "no-store"
            return response

        return wrapped

    return decorator


def _authenticate(request: HttpRequest, scheme_asked: str = "Bearer") -> ApiKey:
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    # RFC 7617 for Basic (SNS answers it with the user:password of the subscription URL).
    challenge = {"WWW-Authenticate": 'Basic realm="leadflow", charset="UTF-8"' if scheme_asked == "Basic"
                 else 'Bearer realm="leadflow"'}
    if scheme.lower() == "basic":
        # Webhook senders that cannot set headers (Amazon SNS) put credentials in the URL:
        # https://leadflow:<key>@host/api/v1/bounces. The key is the password.
        try:
            raw = base64.b64decode(raw.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            raise ApiError(401, "unauthorized", "the Basic credentials are not valid base64", challenge) from None
        scheme = "bearer"
    if scheme.lower() != "bearer" or not raw.strip():
        also = ", or HTTP Basic with the key as the password" if scheme_asked == "Basic" else ""
        raise ApiError(401, "unauthorized", f"send an API key: Authorization: Bearer <key>{also}", challenge)
    api_key = api_key_authenticate(raw.strip())
    if api_key is None:
        raise ApiError(401, "unauthorized", "the API key is not valid or was revoked", challenge)
    return api_key


def _check_scope(api_key: ApiKey, scope: ApiScope) -> None:
    if api_key.has_scope(scope):
        return
    # RFC 6750 section 3.1: insufficient_scope, 403, with the scope the request needs.
    raise ApiError(403, "insufficient_scope",
                   f"this API key lacks the scope {scope.value} (it has: {', '.join(api_key.scopes) or 'none'}); "
                   "an admin can add it under Contacts > API keys",
                   {"WWW-Authenticate": f'Bearer realm="leadflow", error="insufficient_scope", scope="{scope.value}"'})


def _check_rate(api_key: ApiKey) -> None:
    decision = rate_limit_hit(key_id=api_key.pk, limit=api_key.rate_limit_per_minute)
    if not decision.allowed:
        raise ApiError(429, "rate_limited",
                       f"this key is limited to {decision.limit} requests a minute; retry after "
                       f"{decision.retry_after} s", {"Retry-After": str(decision.retry_after)})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(request: HttpRequest, *, content_types: tuple[str, ...] = ("application/json",)) -> Any:
    """The body as JSON, or an ApiError: 415 not JSON, 413 too large, 400 unparsable."""
    if request.content_type not in content_types:
        raise ApiError(415, "unsupported_media_type",
                       f"send Content-Type: application/json (got {request.content_type or 'none'!r})")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "bad_request", "the Content-Length header is not a number") from None
    too_large = ApiError(413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    if declared > MAX_BODY_BYTES:
        raise too_large
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise too_large
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _items(data: Any, name: str, *, single_allowed: bool = False) -> list[Any]:
    """The list under `name` in the body object, checked for shape and size."""
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", f'the body must be a JSON object with a "{name}" list')
    if name not in data:
        if single_allowed:
            return [data]
        raise ApiError(400, "invalid_body", f'the body has no "{name}" list')
    unknown = set(data) - {name}
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown top-level field(s): {', '.join(sorted(unknown))}")
    items = data[name]
    if not isinstance(items, list):
        raise ApiError(400, "invalid_body", f'"{name}" must be a list')
    if len(items) > MAX_EVENTS:
        raise ApiError(400, "too_many_items", f'"{name}" has {len(items)} items; the limit is {MAX_EVENTS} per call')
    return items


@api_view(methods=("POST",), scope=ApiScope.EVENTS_WRITE)
def events(request: HttpRequest, api_key: ApiKey) -> HttpResponse:
    with tracing.span("api.events", **{"leadflow.api_key_id": api_key.pk}):
        result = events_ingest(api_key=api_key, items=_items(read_json(request), "events"))
        tracing.set_attributes(accepted=result.accepted, duplicates=result.duplicates, errors=len(result.errors))
    return JsonResponse({
        "accepted": result.accepted, "duplicates": result.duplicates,
        "errors": [error.as_dict() for error in result.errors],
    }, status=202)


@api_view(methods=("POST",), scope=ApiScope.CONTACTS_WRITE)
def contacts(request: HttpRequest, api_key: ApiKey) -> HttpResponse:
    result = contacts_upsert(items=_items(read_json(request), "contacts", single_allowed=True))
    return JsonResponse({
        "created": result.created, "updated": result.updated,
        "errors": [error.as_dict() for error in result.errors],
    })


@api_view(methods=("GET",), scope=ApiScope.CONTACTS_READ)
def contact_detail(request: HttpRequest, api_key: ApiKey, email: str) -> HttpResponse:
    not_found = ApiError(404, "not_found", "no contact with this email")
    try:
        normalised = normalize_email(email)
    except ValidationError:
        raise not_found from None
    contact = Contact.objects.with_scores().filter(email=normalised).first()
    if contact is None:
        raise not_found
    segments = SegmentMembership.objects.filter(contact=contact, segment__is_active=True).order_by(
        "segment__name").values_list("segment__name", flat=True)
    return JsonResponse({
        "email": contact.email, "first_name": contact.first_name, "last_name": contact.last_name,
        "company": contact.company, "score": contact.score, "grade": contact.grade,
        "stage": contact.lifecycle_stage, "mql_at": contact.mql_at.isoformat() if contact.mql_at else None,
        "segments": list(segments), "tags": sorted(contact.tags.values_list("name", flat=True)),
        "updated_at": contact.updated_at.isoformat(),
    })


def openapi(request: HttpRequest) -> JsonResponse:
    """The API description, public (no key)."""
    return JsonResponse(openapi_schema(), json_dumps_params={"indent": 2})
