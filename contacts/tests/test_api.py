"""The public API: keys, limits, validation, idempotency, contacts in and out, the schema."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from contacts.api import ratelimit
from contacts.apikeys import api_key_authenticate, api_key_cache_clear, api_key_create, api_key_revoke
from contacts.models import ApiKey, ApiScope, Contact, CustomField, Event, Segment, SegmentMembership, Tag
from core.models import AuditEntry
from core.queues import get_connection
from core.testing.scores import score_set

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()  # rate-limit windows and queued jobs of earlier tests


@pytest.fixture
def raw_key() -> str:
    return api_key_create(name="website", scopes=ApiScope.values)[1]  # scopes themselves: test_api_scopes.py


def post(raw: str | None, path: str, body: Any, *, content_type: str = "application/json", **extra: Any) -> Any:
    if raw:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return Client().post(f"/api/v1/{path}", data, content_type=content_type, **extra)


def get(raw: str | None, path: str) -> Any:
    if raw is None:
        return Client().get(f"/api/v1/{path}")
    return Client().get(f"/api/v1/{path}", HTTP_AUTHORIZATION=f"Bearer {raw}")


def event(n: int = 0, **fields: Any) -> dict[str, Any]:
    return {"email": f"lead{n}@example.com", "type": "page.viewed", "properties": {"path": "/pricing"},
            "idempotency_key": f"evt-{n}", **fields}


def error_message(response: Any) -> str:
    return response.json()["error"]["message"]


# --- Authentication -------------------------------------------------------------------------------


def test_a_request_without_a_key_is_401() -> None:
    response = post(None, "events", {"events": [event()]})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in error_message(response)
    assert not Event.objects.exists()


@pytest.mark.parametrize("key", ["nonsense", "lf_abc_def", "Basic dXNlcjpwdw=="])
def test_a_wrong_key_is_401(raw_key: str, key: str) -> None:
    response = post(key, "events", {"events": [event()]})
    assert response.status_code == 401
    assert not Event.objects.exists()


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_401(raw_key: str) -> None:
    forged = raw_key[:-4] + ("AAAA" if not raw_key.endswith("AAAA") else "BBBB")
    assert post(forged, "events", {"events": [event()]}).status_code == 401


def test_a_revoked_key_is_401(raw_key: str) -> None:
    assert post(raw_key, "events", {"events": [event()]}).status_code == 202
    api_key_revoke(api_key=ApiKey.objects.get(name="website"))
    response = post(raw_key, "events", {"events": [event(1)]})
    assert response.status_code == 401
    assert "revoked" in error_message(response)
    assert Event.objects.count() == 1


def test_only_the_hash_is_stored_and_last_use_is_written_once_a_minute() -> None:
    key, raw = api_key_create(name="crm", rate_limit_per_minute=60)
    assert raw.startswith(f"lf_{key.prefix}_")
    assert raw not in key.key_hash
    assert len(key.key_hash) == 64
    assert key.last_used_at is None
    first = api_key_authenticate(raw)
    assert first is not None
    assert first.last_used_at is not None
    stamp = ApiKey.objects.get(pk=key.pk).last_used_at
    assert stamp is not None
    api_key_authenticate(raw)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == stamp  # within the minute: not rewritten
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=stamp - dt.timedelta(minutes=2))
    api_key_cache_clear()  # as CACHE_SECONDS later: the process reads the row again
    api_key_authenticate(raw)
    refreshed = ApiKey.objects.get(pk=key.pk).last_used_at
    assert refreshed is not None
    assert refreshed > stamp - dt.timedelta(minutes=2)


# --- Body shape -----------------------------------------------------------------------------------


def test_form_content_is_415(raw_key: str) -> None:
    response = post(raw_key, "events", "email=a%40b.example", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in error_message(response)


@pytest.mark.parametrize(("body", "problem"), [
    (b"{not json", "not valid JSON"),
    (b'{"events": [NaN]}', "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[" * 100_000, "nested too deeply"),
    ({"event": []}, 'no "events" list'),
    ([event()], 'JSON object with a "events" list'),
    ({"events": {"email": "a@b.example"}}, '"events" must be a list'),
    ({"events": [], "extra": 1}, "unknown top-level field(s): extra"),
    ({"events": [event(n) for n in range(1001)]}, '"events" has 1001 items; the limit is 1000'),
])
def test_a_malformed_body_is_400_naming_the_problem(raw_key: str, body: Any, problem: str) -> None:
    response = post(raw_key, "events", body)
    assert response.status_code == 400
    assert problem in error_message(response)
    assert not Event.objects.exists()


def test_a_body_over_1_mib_is_413(raw_key: str) -> None:
    big = {"events": [event(n, properties={"pad": "x" * 15_000}) for n in range(80)]}
    response = post(raw_key, "events", big)
    assert response.status_code == 413
    assert "1048576 bytes" in error_message(response)
    assert not Event.objects.exists()


def test_a_declared_content_length_over_the_limit_is_413_before_reading(raw_key: str) -> None:
    response = post(raw_key, "events", {"events": [event()]}, CONTENT_LENGTH=str(2 * 1024 * 1024))
    assert response.status_code == 413
    assert not Event.objects.exists()


def test_the_wrong_method_is_405(raw_key: str) -> None:
    response = get(raw_key, "events")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- Items ----------------------------------------------------------------------------------------


def test_bad_items_are_reported_by_index_and_good_ones_accepted(raw_key: str) -> None:
    now = timezone.now()
    items = [
        event(0),
        event(1, email="not-an-email"),
        event(2, type="Page Viewed"),
        event(3, occurred_at="yesterday-ish"),
        event(4, occurred_at=(now + dt.timedelta(days=2)).isoformat()),
        event(5, properties={"blob": "x" * (16 * 1024)}),
        event(6, properties=["not", "an", "object"]),
        event(7, idempotency_key=""),
        event(8, colour="red"),
        event(9, properties={"nul": "a\u0000b"}),
        "not an object",
        event(11, occurred_at=(now - dt.timedelta(days=3)).isoformat()),
        event(12, type="page.viewed\n"),
        event(13, properties=json.loads('{"a":' * 40 + "1" + "}" * 40)),
    ]
    response = post(raw_key, "events", {"events": items})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    messages = {e["index"]: e["message"] for e in body["errors"]}
    assert sorted(messages) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13]
    assert messages[1].startswith("email:")
    assert messages[2].startswith("type:")
    assert "is not an ISO-8601" in messages[3]
    assert "in the future" in messages[4]
    assert messages[5].startswith("properties:")
    assert "the limit is 16384" in messages[5]
    assert "JSON object" in messages[6]
    assert messages[7].startswith("idempotency_key:")
    assert "colour" in messages[8]
    assert "NUL" in messages[9]
    assert messages[10] == "must be an object"
    assert messages[12].startswith("type:")
    assert "nested more than 32 levels" in messages[13]
    assert set(Event.objects.values_list("idempotency_key", flat=True)) == {"evt-0", "evt-11"}


def test_stored_events_carry_the_key_source_and_parsed_times(raw_key: str) -> None:
    post(raw_key, "events", {"events": [
        event(0, email=" Lead0@Example.COM ", occurred_at="2026-03-04T10:00:00+02:00"),
        {"email": "lead0@example.com", "type": "form.submitted"},
    ]})
    viewed = Event.objects.get(event_type="page.viewed")
    assert viewed.source == "api:website"
    assert viewed.contact.email == "lead0@example.com"
    assert viewed.occurred_at == dt.datetime(2026, 3, 4, 8, 0, tzinfo=dt.UTC)
    assert viewed.properties == {"path": "/pricing"}
    submitted = Event.objects.get(event_type="form.submitted")
    assert submitted.idempotency_key is None
    assert timezone.now() - submitted.occurred_at < dt.timedelta(minutes=1)  # defaults to now
    assert Contact.objects.count() == 1


def test_the_same_batch_twice_is_stored_once(raw_key: str) -> None:
    batch = {"events": [event(n) for n in range(5)]}
    first = post(raw_key, "events", batch).json()
    second = post(raw_key, "events", batch).json()
    assert (first["accepted"], first["duplicates"]) == (5, 0)
    assert (second["accepted"], second["duplicates"]) == (0, 5)
    assert Event.objects.count() == 5


def test_a_key_repeated_within_a_batch_is_a_duplicate_but_keyless_events_always_count(raw_key: str) -> None:
    keyless = {"email": "a@example.com", "type": "ping"}
    body = post(raw_key, "events", {"events": [event(1), event(1), keyless, keyless]}).json()
    assert (body["accepted"], body["duplicates"]) == (3, 1)
    assert Event.objects.count() == 3


def test_idempotency_keys_are_scoped_to_the_api_key(raw_key: str) -> None:
    other = api_key_create(name="app")[1]
    post(raw_key, "events", {"events": [event(1)]})
    body = post(other, "events", {"events": [event(1)]}).json()
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    assert sorted(Event.objects.values_list("source", flat=True)) == ["api:app", "api:website"]


def test_unknown_emails_create_contacts_when_the_key_allows_it(raw_key: str) -> None:
    Contact.objects.create(email="known@example.com")
    body = post(raw_key, "events", {"events": [event(1), event(2, email="known@example.com")]}).json()
    assert body["accepted"] == 2
    assert set(Contact.objects.values_list("email", flat=True)) == {"known@example.com", "lead1@example.com"}


def test_unknown_emails_are_item_errors_when_the_key_does_not_create_contacts() -> None:
    raw = api_key_create(name="strict", create_unknown_contacts=False)[1]
    Contact.objects.create(email="known@example.com")
    body = post(raw, "events", {"events": [event(1), event(2, email="known@example.com")]}).json()
    assert body["accepted"] == 1
    assert [e["index"] for e in body["errors"]] == [0]
    assert "does not create contacts" in body["errors"][0]["message"]
    assert Contact.objects.count() == 1


def test_unknown_emails_are_item_errors_when_new_contacts_need_a_required_field(raw_key: str) -> None:
    CustomField.objects.create(key="plan", label="Plan", required=True)
    body = post(raw_key, "events", {"events": [event(1)]}).json()
    assert body["accepted"] == 0
    assert "plan: required" in body["errors"][0]["message"]
    assert not Contact.objects.exists()


def test_a_500_event_batch_uses_a_constant_number_of_queries(
    raw_key: str, django_assert_max_num_queries: Any,
) -> None:
    Contact.objects.bulk_create([Contact(email=f"lead{n}@example.com") for n in range(0, 500, 2)])
    items = [event(n) for n in range(500)]  # half known contacts, half new
    # 19 on SQLite, which splits bulk inserts at 999 parameters (~6 for 250 contacts, 5 for 500 events);
    # fewer on PostgreSQL. Per-row work would be over 1,000.
    with django_assert_max_num_queries(20):
        response = post(raw_key, "events", {"events": items})
    assert response.json()["accepted"] == 500
    assert Event.objects.count() == 500
    assert Contact.objects.count() == 500


# --- Rate limit -----------------------------------------------------------------------------------


def test_past_the_rate_limit_requests_are_429_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "_now", lambda: 1_800_000_015.5)  # 15.5 s into a minute
    raw = api_key_create(name="tiny", rate_limit_per_minute=3)[1]
    statuses = [post(raw, "events", {"events": [event(n)]}).status_code for n in range(3)]
    limited = post(raw, "events", {"events": [event(9)]})
    assert statuses == [202, 202, 202]
    assert limited.status_code == 429
    assert limited["Retry-After"] == "45"
    assert "3 requests a minute" in error_message(limited)
    assert Event.objects.count() == 3
    monkeypatch.setattr(ratelimit, "_now", lambda: 1_800_000_060.0)  # the next minute
    assert post(raw, "events", {"events": [event(9)]}).status_code == 202


# --- Contacts -------------------------------------------------------------------------------------


def test_a_contact_is_upserted_and_read_back_with_score_segments_and_tags(raw_key: str) -> None:
    CustomField.objects.create(key="plan", label="Plan")
    CustomField.objects.create(key="seats", label="Seats", field_type="number")
    created = post(raw_key, "contacts", {"email": "Ann@Acme.example", "first_name": "Ann",
                                         "attributes": {"plan": "pro", "seats": "5"}})
    assert created.status_code == 200
    assert created.json() == {"created": 1, "updated": 0, "errors": []}
    contact = Contact.objects.get(email="ann@acme.example")
    score_set(contact, 42, "B")
    contact.tags.add(Tag.objects.create(name="vip"))
    SegmentMembership.objects.create(contact=contact, segment=Segment.objects.create(name="Hot leads"))
    SegmentMembership.objects.create(contact=contact, segment=Segment.objects.create(name="Old", is_active=False))

    updated = post(raw_key, "contacts", {"contacts": [
        {"email": "ann@acme.example", "lifecycle_stage": "lead", "attributes": {"seats": 7}},
    ]})
    response = get(raw_key, "contacts/ANN@acme.example")

    assert updated.json() == {"created": 0, "updated": 1, "errors": []}
    assert response.status_code == 200
    body = response.json()
    assert (body["email"], body["first_name"], body["score"], body["grade"], body["stage"]) == (
        "ann@acme.example", "Ann", 42, "B", "lead")
    assert body["segments"] == ["Hot leads"]
    assert body["tags"] == ["vip"]
    contact.refresh_from_db()
    assert contact.attributes == {"plan": "pro", "seats": 7}  # merged, coerced


def test_a_contact_that_never_scored_reads_score_0_and_no_grade(raw_key: str) -> None:
    Contact.objects.create(email="new@acme.example")
    body = get(raw_key, "contacts/new@acme.example").json()
    assert (body["email"], body["score"], body["grade"]) == ("new@acme.example", 0, "")


def test_contact_upsert_reports_errors_per_item(raw_key: str) -> None:
    response = post(raw_key, "contacts", {"contacts": [
        {"email": "ok@example.com", "company": "Acme"},
        {"email": "nope"},
        {"email": "bad-stage@example.com", "lifecycle_stage": "royalty"},
        {"email": "bad-field@example.com", "is_test": True},
        {"email": "bad-attr@example.com", "attributes": {"unknown": 1}},
        {"email": "bad-type@example.com", "first_name": 5},
    ]})
    assert response.status_code == 200
    body = response.json()
    assert (body["created"], body["updated"]) == (1, 0)
    messages = {e["index"]: e["message"] for e in body["errors"]}
    assert sorted(messages) == [1, 2, 3, 4, 5]
    assert messages[1].startswith("email:")
    assert messages[2].startswith("lifecycle_stage:")
    assert "is_test" in messages[3]
    assert "unknown custom field" in messages[4]
    assert messages[5] == "first_name: must be a string"
    assert list(Contact.objects.values_list("email", flat=True)) == ["ok@example.com"]


def test_contact_lookup_is_404_for_an_unknown_or_invalid_email(raw_key: str) -> None:
    assert get(raw_key, "contacts/nobody@example.com").status_code == 404
    assert get(raw_key, "contacts/not-an-email").status_code == 404
    assert get(None, "contacts/nobody@example.com").status_code == 401


def test_contact_upsert_checks_the_body_like_events(raw_key: str) -> None:
    assert post(raw_key, "contacts", "email=a", content_type="text/plain").status_code == 415
    too_many = post(raw_key, "contacts", {"contacts": [{"email": f"a{n}@x.example"} for n in range(1001)]})
    assert too_many.status_code == 400
    assert "limit is 1000" in error_message(too_many)
    assert post(raw_key, "contacts", {"contacts": "a@x.example"}).status_code == 400
    assert not Contact.objects.exists()


# --- Schema, command, admin -----------------------------------------------------------------------


def test_the_openapi_schema_is_public_and_the_docs_copy_is_current() -> None:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1")
    assert set(schema["paths"]) == {"/events", "/contacts", "/contacts/{email}", "/bounces", "/campaigns/{key}/send",
                                    "/openapi.json"}
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert {"400", "401", "413", "415", "429"} <= set(schema["paths"]["/events"]["post"]["responses"])
    assert json.loads((ROOT / "docs" / "openapi.json").read_text()) == schema, (
        "docs/openapi.json is stale; see docs/event-api.md, 'Schema', for the command that writes it")


def test_create_api_key_prints_a_key_that_authenticates() -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "segment-io", "--rate-limit", "120", "--no-create-contacts", stdout=out,
                 stderr=err)
    raw = out.getvalue().strip()
    key = api_key_authenticate(raw)
    assert key is not None
    assert (key.name, key.rate_limit_per_minute, key.create_unknown_contacts) == ("segment-io", 120, False)
    assert raw not in err.getvalue()
    assert AuditEntry.objects.filter(action="api_key.created", target_id=str(key.pk)).exists()


def test_ops_create_a_key_in_the_admin_see_it_once_and_revoke_it(role_users: dict[str, User]) -> None:
    client = Client()
    client.force_login(role_users["ops"])
    response = client.post("/admin/contacts/apikey/add/", {"name": "hubspot", "rate_limit_per_minute": "100",
                                                          "create_unknown_contacts": "on",
                                                          "scopes": ["events:write"]}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    raw = next(word for m in shown for word in m.split() if word.startswith("lf_"))
    key = api_key_authenticate(raw)
    assert key is not None
    assert key.name == "hubspot"
    assert key.created_by == role_users["ops"]
    page = client.get(f"/admin/contacts/apikey/{key.pk}/change/").content.decode()
    assert key.key_hash not in page
    assert raw not in page

    client.post("/admin/contacts/apikey/", {"action": "revoke", "_selected_action": [key.pk]})

    assert api_key_authenticate(raw) is None
    assert AuditEntry.objects.filter(action="api_key.revoked", actor=role_users["ops"]).exists()


def test_sales_cannot_see_api_keys(role_users: dict[str, User]) -> None:
    client = Client()
    client.force_login(role_users["sales"])
    assert client.get("/admin/contacts/apikey/").status_code == 403
