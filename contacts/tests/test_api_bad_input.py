"""Hostile input on the API (issue 14): each bad item is a per-item error naming its field, each bad
body a 400 naming the problem, never a 500, and the valid items of the same batch are stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from automation.crm.connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from automation.crm.models import CrmConnection
from automation.crm.vault import encrypt
from contacts.apikeys import api_key_create
from contacts.ingest import MAX_PROPERTIES_DEPTH
from contacts.models import Contact, Event
from core.queues import get_connection
from core.testing.sns import TOPIC, FakeSns, fake_sns_for

pytestmark = pytest.mark.django_db
CRM_SECRET = "crm-signing-secret"


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


@pytest.fixture
def raw_key() -> str:
    return api_key_create(name="website", scopes=["events:write", "contacts:write", "bounces:write"])[1]


def post(raw: str, path: str, body: Any, *, content_type: str = "application/json") -> Any:
    # json.dumps escapes a lone surrogate as \ud800, which json.loads on the server accepts.
    data = body if isinstance(body, str) else json.dumps(body)
    return Client().post(f"/api/v1/{path}", data, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {raw}")


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep, counting itself: nested(1) == {"v": 1}."""
    value: dict[str, Any] = {"v": 1}
    for _ in range(depth - 1):
        value = {"v": value}
    return value


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {"email": f"lead{n}@example.com", "type": "page.viewed", "idempotency_key": f"evt-{n}", **fields}


def errors_by_index(response: Any) -> dict[int, str]:
    return {e["index"]: e["message"] for e in response.json()["errors"]}


# --- Events ---------------------------------------------------------------------------------------


def test_lone_surrogates_are_item_errors_naming_the_field_and_the_rest_is_stored(raw_key: str) -> None:
    response = post(raw_key, "events", {"events": [
        event(0),
        event(1, properties={"path": "\ud800"}),
        event(2, properties={"\udfff": "key"}),
        event(3, properties={"list": [{"deep": "x\ud83d"}]}),
        event(4, email="ann\ud800@example.com"),
        event(5, idempotency_key="k\udc00"),
        event(6),
    ]})
    assert response.status_code == 202, response.content
    errors = errors_by_index(response)
    assert sorted(errors) == [1, 2, 3, 4, 5]
    assert errors[1].startswith("properties.path:")
    assert "surrogate" in errors[1]
    assert errors[2].startswith("properties:")
    assert "surrogate" in errors[2]
    assert errors[3].startswith("properties.list[0].deep:")
    assert errors[4].startswith("email:")
    assert errors[5].startswith("idempotency_key:")
    assert set(Event.objects.values_list("idempotency_key", flat=True)) == {"evt-0", "evt-6"}


@pytest.mark.parametrize("moment", [
    "0001-01-01T00:00:00+14:00",  # 0000-12-31 in UTC: converting it underflows datetime
    "0001-01-01T00:00:00Z",  # storable, but a scoring window before it underflows in the worker
    "1969-12-31T23:59:59Z",
])
def test_timestamps_before_1970_are_item_errors(raw_key: str, moment: str) -> None:
    response = post(raw_key, "events", {"events": [event(0), event(1, occurred_at=moment), event(2)]})
    assert response.status_code == 202, response.content
    errors = errors_by_index(response)
    assert list(errors) == [1]
    assert errors[1].startswith("occurred_at:")
    assert "1970" in errors[1]
    assert Event.objects.count() == 2


def test_the_earliest_accepted_moment_is_stored(raw_key: str) -> None:
    response = post(raw_key, "events", {"events": [event(0, occurred_at="1970-01-01T01:00:00+01:00")]})
    assert response.json()["errors"] == []
    assert Event.objects.get().occurred_at.timestamp() == 0


def test_properties_nested_exactly_at_the_limit_are_stored_one_more_level_is_an_item_error(raw_key: str) -> None:
    response = post(raw_key, "events", {"events": [
        event(0, properties=nested(MAX_PROPERTIES_DEPTH)),
        event(1, properties=nested(MAX_PROPERTIES_DEPTH + 1)),
    ]})
    assert response.status_code == 202, response.content
    errors = errors_by_index(response)
    assert list(errors) == [1]
    assert f"nested more than {MAX_PROPERTIES_DEPTH} levels" in errors[1]
    assert Event.objects.get().properties == nested(MAX_PROPERTIES_DEPTH)


# --- Contacts -------------------------------------------------------------------------------------


def test_contact_items_with_surrogates_bad_times_or_deep_attributes_fail_alone(raw_key: str) -> None:
    response = post(raw_key, "contacts", {"contacts": [
        {"email": "ok0@example.com", "first_name": "Ann"},
        {"email": "bad1@example.com", "first_name": "\ud800"},
        {"email": "bad2@example.com", "consent_at": "0001-01-01T00:00:00+14:00"},
        {"email": "bad3@example.com", "attributes": {"x\udfff": 1}},
        {"email": "bad4@example.com", "attributes": nested(MAX_PROPERTIES_DEPTH + 1)},
        {"email": "ok5@example.com", "last_name": "Bee"},
    ]})
    assert response.status_code == 200, response.content
    errors = errors_by_index(response)
    assert sorted(errors) == [1, 2, 3, 4]
    assert errors[1].startswith("first_name:")
    assert "surrogate" in errors[1]
    assert errors[2].startswith("consent_at:")
    assert errors[3].startswith("attributes:")
    assert errors[4].startswith("attributes:")
    assert "nested" in errors[4]
    assert set(Contact.objects.values_list("email", flat=True)) == {"ok0@example.com", "ok5@example.com"}


# --- Bounces --------------------------------------------------------------------------------------


@pytest.fixture
def fake_sns(settings: Any) -> Iterator[FakeSns]:
    with fake_sns_for(settings) as fake:
        yield fake


def sns(message: Any, **envelope: Any) -> dict[str, Any]:
    """A Notification to be signed by the fake SNS (signed_if_whole) before it is posted."""
    return {"Type": "Notification", "MessageId": "sns-1",
            "Message": message if isinstance(message, str) else json.dumps(message), **envelope}


def signed_if_whole(fake: FakeSns, body: Any) -> Any:
    """A Notification with a string Message gets SNS's signature (a genuine SNS message whose SES
    content is malformed); broken envelopes are posted as they are."""
    if isinstance(body, dict) and body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        return fake.notification(body["Message"])
    return body


@pytest.mark.parametrize(("body", "problem"), [
    ("not json at all", "not valid JSON"),
    ({"Type": ["Notification"]}, "SNS Type"),
    ({"Type": "Notification"}, "SNS Message"),
    ({"Type": "Notification", "Message": 5}, "SNS Message"),
    ({"Type": "Notification", "Message": {"notificationType": "Bounce"}}, "SNS Message"),
    (sns("{not json"), "SNS Message is not JSON"),
    (sns("[1, 2]"), "SES notification object"),
    (sns({"notificationType": ["Bounce"]}), "notificationType"),
    (sns({"notificationType": "Bounce"}), "bounce"),
    (sns({"notificationType": "Bounce", "bounce": []}), "bounce"),
    (sns({"notificationType": "Bounce", "bounce": {"bouncedRecipients": 7}}), "bouncedRecipients"),
    (sns({"notificationType": "Bounce", "bounce": {"bouncedRecipients": "a@b.example"}}), "bouncedRecipients"),
    (sns({"notificationType": "Bounce", "bounce": {"bouncedRecipients": []}, "mail": "x"}), "mail"),
    (sns({"notificationType": "Bounce", "bounce": {"bouncedRecipients": []},
          "mail": {"headers": 3}}), "mail.headers"),
    (sns({"notificationType": "Complaint", "complaint": None}), "complaint"),
    (sns({"notificationType": "Complaint", "complaint": {"complainedRecipients": {"a": 1}}}),
     "complainedRecipients"),
    ({"Type": "SubscriptionConfirmation", "Message": "m", "MessageId": "1", "SubscribeURL": 12, "Timestamp": "t",
      "Token": "t", "TopicArn": TOPIC}, "SubscribeURL"),
])
def test_malformed_sns_envelopes_are_400_naming_the_problem(raw_key: str, fake_sns: FakeSns, body: Any,
                                                            problem: str) -> None:
    response = post(raw_key, "bounces", signed_if_whole(fake_sns, body), content_type="text/plain")
    assert response.status_code == 400, response.content
    assert problem in response.json()["error"]["message"]


def test_one_bad_ses_recipient_is_an_item_error_and_the_others_are_recorded(raw_key: str, fake_sns: FakeSns) -> None:
    Contact.objects.create(email="ann@example.com")
    Contact.objects.create(email="bob@example.com")
    notification = {"notificationType": "Bounce", "mail": {"messageId": "ses-1"},
                    "bounce": {"bounceType": "Permanent", "bouncedRecipients": [
                        {"emailAddress": "ann@example.com"}, {"emailAddress": "x\ud800@example.com"},
                        "not an object", {"emailAddress": "a" * 300 + "@example.com"},
                        {"emailAddress": "bob@example.com", "diagnosticCode": ["550"]}]}}
    response = post(raw_key, "bounces", fake_sns.notification(notification), content_type="text/plain")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["recorded"] == 1
    errors = errors_by_index(response)
    assert sorted(errors) == [1, 2, 3, 4]
    assert all(message.startswith("bounce.bouncedRecipients[") for message in errors.values())
    assert Event.objects.get(event_type="email_bounced").contact.email == "ann@example.com"


def test_own_format_bounces_with_unstorable_strings_fail_alone(raw_key: str) -> None:
    Contact.objects.create(email="ann@example.com")
    response = post(raw_key, "bounces", {"bounces": [
        {"email": "ann@example.com", "type": "hard"},
        {"email": "b\ud800@example.com", "type": "hard"},
        {"email": "c@example.com", "type": "hard", "reason": "5.1.1\u0000"},
        {"email": "d@example.com", "type": "soft", "message_id": "\udfff"},
        {"email": "e" * 300 + "@example.com", "type": "hard"},
        {"email": "f@example.com", "type": ["hard"]},
    ]})
    assert response.status_code == 202, response.content
    errors = errors_by_index(response)
    assert sorted(errors) == [1, 2, 3, 4, 5]
    assert errors[1].startswith("email:")
    assert errors[2].startswith("reason:")
    assert errors[3].startswith("message_id:")
    assert errors[4].startswith("email:")
    assert errors[5].startswith("type:")
    assert response.json()["recorded"] == 1


# --- CRM status webhook ---------------------------------------------------------------------------


def post_crm(connection: CrmConnection, payload: Any, *, path: str | None = None) -> Any:
    body = json.dumps(payload).encode()
    ts = str(int(time.time()))
    return Client().post(path or f"/api/v1/crm/{connection.pk}/status", data=body, content_type="application/json",
                         headers={TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(CRM_SECRET, ts, body)})


@pytest.fixture
def crm() -> CrmConnection:
    connection = CrmConnection.objects.create(
        name="crm-bad-input", kind=CrmConnection.Kind.WEBHOOK, base_url="http://127.0.0.1:9",
        signing_secret_encrypted=encrypt(CRM_SECRET))
    return connection


def test_crm_status_items_of_the_wrong_type_or_unstorable_fail_alone(crm: CrmConnection) -> None:
    Contact.objects.create(email="ann@example.com")
    response = post_crm(crm, {"changes": [
        {"email": "ann@example.com", "status": ["accepted"]},
        {"email": "ann@example.com", "status": {"a": 1}, "id": "c-1"},
        {"email": "ann@example.com", "status": "accepted", "id": "c\ud800"},
        {"email": "ann@example.com", "status": "accepted", "id": "c\u0000"},
        {"email": "ann@example.com", "status": "closed", "reason": "\udfff"},
        {"email": "ann@example.com", "status": "closed", "occurred_at": "0001-01-01T00:00:00+14:00"},
        {"email": "ann@example.com", "status": "accepted", "id": "c-ok"},
    ]})
    assert response.status_code == 207, response.content
    errors = errors_by_index(response)
    assert sorted(errors) == [0, 1, 2, 3, 4, 5]
    assert errors[0].startswith("status:")
    assert errors[1].startswith("status:")
    assert errors[2].startswith("id:")
    assert errors[3].startswith("id:")
    assert errors[4].startswith("properties.reason:")
    assert errors[5].startswith("occurred_at:")
    assert list(Event.objects.values_list("idempotency_key", flat=True)) == ["change:c-ok"]
