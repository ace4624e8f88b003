"""The OpenAPI 3.1 description of /api/v1/, built from the same constants the code enforces.
Served at /api/v1/openapi.json; docs/openapi.json is a copy kept equal by a test."""

from __future__ import annotations

from typing import Any

from contacts import ingest
from contacts.models import ApiScope


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": _ref("Error")}}}
    if headers:
        response["headers"] = headers
    return response


def _common_errors() -> dict[str, Any]:
    return {
        "401": _error("No API key, or a wrong or revoked one.", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
        "403": _error("The key lacks this operation's scope (code insufficient_scope; the message names it).",
                      {"WWW-Authenticate": {"description": 'Bearer error="insufficient_scope", scope="<scope>"',
                                            "schema": {"type": "string"}}}),
        "405": _error("Wrong HTTP method."),
        "429": _error("The key's requests-per-minute limit is used up.",
                      {"Retry-After": {"description": "Seconds until the next window.",
                                       "schema": {"type": "integer"}}}),
    }


def _body_errors() -> dict[str, Any]:
    return {
        "400": _error("The body is not JSON, or not the expected shape (the message names the problem)."),
        "413": _error(f"The body is larger than {ingest.MAX_BODY_BYTES} bytes."),
        "415": _error("Content-Type is not application/json."),
    }


def _schemas() -> dict[str, Any]:
    item_error = {"type": "object", "required": ["index", "message"], "properties": {
        "index": {"type": "integer", "description": "Position of the item in the list, from 0."},
        "message": {"type": "string", "description": "What is wrong, starting with the field name."}}}
    text = {"type": "string"}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "examples": ["invalid_body"]}, "message": text}}}},
        "ItemError": item_error,
        "Event": {"type": "object", "required": ["email", "type"], "additionalProperties": False, "properties": {
            "email": {"type": "string", "format": "email"},
            "type": {"type": "string", "pattern": ingest.EVENT_TYPE_RE.pattern, "examples": ["page.viewed"]},
            "properties": {"type": "object", "description": f"At most {ingest.MAX_PROPERTIES_BYTES} bytes "
                                                            f"as compact JSON, nested at most "
                                                            f"{ingest.MAX_PROPERTIES_DEPTH} levels."},
            "occurred_at": {"type": "string", "format": "date-time",
                            "description": "Default: now. No offset means UTC. At most 1 day in the future."},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": ingest.MAX_IDEMPOTENCY_KEY,
                                "description": "Unique per API key; a repeat is counted as a duplicate."}}},
        "EventBatch": {"type": "object", "required": ["events"], "additionalProperties": False, "properties": {
            "events": {"type": "array", "maxItems": ingest.MAX_EVENTS, "items": _ref("Event")}}},
        "EventResult": {"type": "object", "required": ["accepted", "duplicates", "errors"], "properties": {
            "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
            "errors": {"type": "array", "items": _ref("ItemError")}}},
        "Contact": {"type": "object", "required": ["email"], "additionalProperties": False, "properties": {
            "email": {"type": "string", "format": "email"},
            **{name: text for name in sorted(ingest.CONTACT_FIELDS - {"attributes", "consent_at"})},
            "attributes": {"type": "object", "description": "Custom field values by key, merged into the "
                                                            "stored ones; null removes one."},
            "consent_at": {"type": ["string", "null"], "format": "date-time"}}},
        "ContactBatch": {"type": "object", "required": ["contacts"], "additionalProperties": False,
                         "properties": {"contacts": {"type": "array", "maxItems": ingest.MAX_EVENTS,
                                                     "items": _ref("Contact")}}},
        "UpsertResult": {"type": "object", "required": ["created", "updated", "errors"], "properties": {
            "created": {"type": "integer"}, "updated": {"type": "integer"},
            "errors": {"type": "array", "items": _ref("ItemError")}}},
        "ContactSummary": {"type": "object", "properties": {
            "email": text, "first_name": text, "last_name": text, "company": text,
            "score": {"type": "integer"}, "grade": text, "stage": text,
            "mql_at": {"type": ["string", "null"], "format": "date-time"},
            "segments": {"type": "array", "items": text}, "tags": {"type": "array", "items": text},
            "updated_at": {"type": "string", "format": "date-time"}}},
    }


def _needs(scope: ApiScope) -> list[dict[str, list[str]]]:
    """An operation's security requirement: the bearer key, holding `scope` (OpenAPI 3.1 allows
    role names in a requirement for non-OAuth schemes)."""
    return [{"apiKey": [scope.value]}]


def openapi_schema() -> dict[str, Any]:
    json_body = {"required": True, "content": {"application/json": {}}}
    scopes = "; ".join(label for _, label in ApiScope.choices)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leadflow API", "version": "1",
                 "description": "Events and contacts in, contact scores out. See docs/event-api.md."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "Authorization: Bearer lf_<prefix>_<secret>. Each "
                                                          "operation needs one scope of the key: " + scopes}},
            "schemas": _schemas(),
        },
        "paths": {
            "/events": {"post": {
                "summary": f"Send up to {ingest.MAX_EVENTS} events", "security": _needs(ApiScope.EVENTS_WRITE),
                "requestBody": {**json_body, "content": {"application/json": {"schema": _ref("EventBatch")}}},
                "responses": {"202": {"description": "Stored valid items; processing follows within seconds.",
                                      "content": {"application/json": {"schema": _ref("EventResult")}}},
                              **_body_errors(), **_common_errors()}}},
            "/contacts": {"post": {
                "summary": f"Create or update one contact, or up to {ingest.MAX_EVENTS}",
                "security": _needs(ApiScope.CONTACTS_WRITE),
                "requestBody": {**json_body, "content": {"application/json": {
                    "schema": {"oneOf": [_ref("Contact"), _ref("ContactBatch")]}}}},
                "responses": {"200": {"description": "Counts and per-item errors.",
                                      "content": {"application/json": {"schema": _ref("UpsertResult")}}},
                              **_body_errors(), **_common_errors()}}},
            "/contacts/{email}": {"get": {
                "summary": "Score, grade, stage, segments and tags of one contact",
                "security": _needs(ApiScope.CONTACTS_READ),
                "parameters": [{"name": "email", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The contact.",
                                      "content": {"application/json": {"schema": _ref("ContactSummary")}}},
                              "404": _error("No contact with this email."), **_common_errors()}}},
            "/bounces": {"post": {
                "summary": "Report bounces and complaints (own format, or Amazon SES through SNS as text/plain)",
                "security": _needs(ApiScope.BOUNCES_WRITE),
                "description": "See docs/delivery.md. HTTP Basic with the key as the password is accepted too.",
                "requestBody": {**json_body, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["bounces"], "additionalProperties": False,
                    "properties": {"bounces": {"type": "array", "maxItems": ingest.MAX_EVENTS, "items": {
                        "type": "object", "required": ["email", "type"],
                        "properties": {"email": {"type": "string", "format": "email"},
                                       "type": {"enum": ["hard", "soft", "complaint"]},
                                       "message_id": {"type": "string", "description": "Message-ID header"},
                                       "reason": {"type": "string"}}}}}}}}},
                "responses": {"202": {"description": "recorded, suppressed, unknown and per-item errors"},
                              **_body_errors(), **_common_errors()}}},
            "/campaigns/{key}/send": {"post": {
                "summary": "Send an approved broadcast as scheduled (now, at its time, or in each contact's time zone)",
                "security": _needs(ApiScope.CAMPAIGNS_SEND),
                "description": "See docs/broadcasts.md. No body. The same as the admin's Send and "
                               "`manage.py broadcast_send <key>`.",
                "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"202": {"description": "key, status (sending or scheduled), schedule, send_at, "
                                                     "recipients"},
                              "404": _error("No broadcast with this key."),
                              "409": _error("Not approved, already sent, or changed since its approval."),
                              "422": _error("A schedule in the past, or an empty audience."),
                              **_common_errors()}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
    }
