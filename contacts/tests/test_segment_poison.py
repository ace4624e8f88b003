"""One segment can never stop event processing (issue 14, item 5).

A value the database cannot bind (a whole number beyond 64 bits, 1e400) was accepted at save and
then failed every event batch: scores, the other segments, workflow triggers and unsubscribes all
stopped until someone switched the segment off. Now such definitions are refused at save, a legacy
row that carries one is skipped and marked failed (the operations page lists it), and a segment
whose query the database refuses is isolated in a savepoint instead of aborting the batch."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
from django.test import Client

from automation.models import Enrollment
from automation.tests.conftest import deploy, wf_file
from campaigns.models import Suppression
from campaigns.services import contact_unsubscribe
from campaigns.tests.conftest import make_contact
from contacts.models import Contact, CustomField, Event, Segment, SegmentMembership
from contacts.pipeline import events_process
from contacts.segments import services as segment_services
from contacts.segments.compiler import validate_filter
from contacts.segments.services import segment_preview, segments_refresh_all
from core.testing.html import html_section
from scoring.models import ScoreEntry
from scoring.tests.factories import behaviour_rule

pytestmark = pytest.mark.django_db

# Each failed every event batch before: the first on SQLite (its integers are 64-bit), the others
# on both databases (float() of 10**400 overflows while the query is built).
POISONS = {
    "score beyond 64 bits": {"field": "score", "op": "gt", "value": 2**64},
    "attribute 10**400": {"attribute": "plan_seats", "op": "gt", "value": 10**400},
    "event property 10**400": {"event": "page_view", "properties": {"seats": 10**400}},
}


@pytest.fixture
def world(db: None) -> dict[str, Any]:
    CustomField.objects.create(key="plan_seats", label="Seats", field_type=CustomField.Type.NUMBER)
    behaviour_rule("Page views", "page_view", points=5)
    behaviour_rule("Unsubscribed", "email_unsubscribed", points=-20)
    deploy(wf_file("welcome", steps=[{"id": "wait", "type": "wait", "duration": "1d"}],
                   trigger={"type": "event", "event": "signed_up"}))
    return {
        "visitors": Segment.objects.create(name="Visitors", definition={"event": "page_view"}),
        "poisoned": Segment.objects.create(name="Poisoned", definition={"tag": "placeholder"}),
        "ann": make_contact("ann@example.com"),
    }


def poison(segment: Segment, definition: Any) -> None:
    """Store a definition as a legacy row would hold it: saved before validation refused it."""
    Segment.objects.filter(pk=segment.pk).update(definition=definition)


def post(contact: Contact, event_type: str) -> Event:
    event = Event.objects.create(contact=contact, event_type=event_type, source="api:test",
                                 occurred_at=contact.created_at)
    assert events_process(event_ids=[event.pk]) == 1  # the events job's service
    return event


@pytest.mark.parametrize("name", list(POISONS))
def test_events_keep_flowing_past_a_poisoned_segment(world: dict[str, Any], client: Client, role_users: Any,
                                                     name: str) -> None:
    ann, visitors, poisoned = world["ann"], world["visitors"], world["poisoned"]
    # given a segment holding a value the database cannot bind
    poison(poisoned, POISONS[name])
    # when events arrive
    post(ann, "page_view")
    post(ann, "signed_up")
    contact_unsubscribe(contact=ann, source="test")
    unsubscribed = Event.objects.get(contact=ann, event_type="email_unsubscribed")
    assert events_process(event_ids=[unsubscribed.pk]) == 1
    # then scoring, the other segment, the workflow trigger and the unsubscribe all happened
    assert sorted(ScoreEntry.objects.filter(contact=ann).values_list("points", flat=True)) == [-20, 5]
    assert SegmentMembership.objects.filter(segment=visitors, contact=ann).exists()
    assert Enrollment.objects.filter(contact=ann).count() == 1
    assert Suppression.objects.count() == 1
    assert not Event.objects.filter(processed_at__isnull=True).exists()
    # and the poisoned segment is marked failed, and listed on the operations page
    poisoned.refresh_from_db()
    assert poisoned.refresh_failed_at is not None
    assert poisoned.refresh_error.startswith("Live update skipped this segment: ")
    assert "64 bits" in poisoned.refresh_error
    client.force_login(role_users["ops"])
    table = html.unescape(html_section(client.get("/admin/operations/").content.decode(),
                                       'id="failed-segments"', "</table>"))
    assert "Poisoned" in table
    assert "64 bits" in table
    assert "Visitors" not in table


@pytest.mark.parametrize("name", list(POISONS))
def test_the_hourly_refresh_reports_a_poisoned_segment_and_refreshes_the_rest(world: dict[str, Any],
                                                                              name: str) -> None:
    poison(world["poisoned"], POISONS[name])
    Event.objects.create(contact=world["ann"], event_type="page_view", occurred_at=world["ann"].created_at)
    outcome = segments_refresh_all()
    assert "64 bits" in str(outcome[world["poisoned"].pk])
    assert outcome[world["visitors"].pk] == (1, 0)


def test_a_segment_the_database_refuses_is_isolated_and_the_batch_commits(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation knows every value it refuses today; this is for the next one it does not. The
    condition overflows inside the database on both (SQLite: integer overflow, PostgreSQL: bigint
    out of range), so on PostgreSQL it would abort the batch's transaction without a savepoint."""
    ann, poisoned = world["ann"], world["poisoned"]
    refused = Q(RawSQL("abs(-9223372036854775807 - 1) > %s", (0,), output_field=BooleanField()))  # noqa: S611 (constant SQL)
    compile_with = segment_services.compile_with

    def compile_or_refuse(tree: Any, *, context: Any, segment_id: int | None = None) -> Q:
        return refused if segment_id == poisoned.pk else compile_with(tree, context=context, segment_id=segment_id)

    monkeypatch.setattr(segment_services, "compile_with", compile_or_refuse)
    SegmentMembership.objects.create(segment=poisoned, contact=ann)  # a member before it broke
    post(ann, "page_view")
    post(ann, "signed_up")
    assert SegmentMembership.objects.filter(segment=world["visitors"], contact=ann).exists()
    assert Enrollment.objects.filter(contact=ann).count() == 1
    poisoned.refresh_from_db()
    assert poisoned.refresh_failed_at is not None
    assert "Live update skipped this segment" in poisoned.refresh_error
    assert SegmentMembership.objects.filter(segment=poisoned, contact=ann).exists()  # left as it was, not emptied


def test_a_data_poison_in_a_contact_attribute_does_not_fail_the_segment(world: dict[str, Any]) -> None:
    """PostgreSQL's jsonb keeps 1e400 as written; casting it to double precision failed every query
    over that key. It now reads as infinity there, as SQLite and the Python evaluator read it."""
    big = make_contact("big@example.com", attributes={"plan_seats": 10**400})
    small = make_contact("small@example.com", attributes={"plan_seats": 7})
    make_contact("none@example.com", attributes={"plan_seats": -(10**400)})
    seats = Segment.objects.create(name="Seats", definition={"attribute": "plan_seats", "op": "gt", "value": 5})
    post(big, "page_view")
    post(small, "page_view")
    post(Contact.objects.get(email="none@example.com"), "page_view")
    assert set(SegmentMembership.objects.filter(segment=seats).values_list("contact__email", flat=True)) \
        == {"big@example.com", "small@example.com"}
    seats.refresh_from_db()
    assert seats.refresh_failed_at is None


@pytest.mark.parametrize(("tree", "message"), [
    ({"field": "score", "op": "gt", "value": 2**63}, "value: whole numbers must fit in 64 bits"),
    ({"field": "score", "op": "in", "value": [1, -(2**63) - 1]}, "value: whole numbers must fit in 64 bits"),
    ({"attribute": "plan_seats", "op": "lt", "value": 10**400}, "value: whole numbers must fit in 64 bits"),
    ({"field": "score", "op": "gt", "value": float("inf")}, "value: expected a finite number"),
    ({"field": "score", "op": "gt", "value": float("nan")}, "value: expected a finite number"),
    ({"event": "page_view", "properties": {"seats": 2**64}}, "properties.seats: whole numbers must fit in 64 bits"),
    ({"event": "page_view", "properties": {"seats": float("inf")}}, "properties.seats: expected a finite number"),
    ({"field": "company", "op": "eq", "value": "a\x00b"}, "value: text contains a NUL character"),
    ({"field": "company", "op": "eq", "value": "a\ud800b"}, "value: text is not valid Unicode"),
    ({"field": "company", "op": "contains", "value": "x" * 1001}, "value: text longer than 1000 characters"),
    ({"tag": "vip\x00"}, "tag: text contains a NUL character"),
    ({"list": "x" * 5000}, "list: text longer than 1000 characters"),
    ({"event": "a\x00"}, "event: text contains a NUL character"),
    ({"event": "x", "properties": {"plan": "\x00"}}, "properties.plan: text contains a NUL character"),
    ({"field": "created_at", "op": "gt", "value": "0001-01-01T00:00:00+05:00"}, "is out of range"),
    ({"field": "created_at", "op": "lt", "value": "9999-12-31T23:59:59-05:00"}, "is out of range"),
])
def test_save_refuses_what_the_database_cannot_bind(world: dict[str, Any], tree: Any, message: str) -> None:
    errors = validate_filter(tree)
    assert len(errors) == 1
    assert message in errors[0]


def test_the_segment_admin_refuses_a_poisoned_definition(world: dict[str, Any], client: Client,
                                                         role_users: Any) -> None:
    client.force_login(role_users["marketer"])
    data = {"name": "Big", "description": "", "definition": '{"field": "score", "op": "gt", '
            '"value": 18446744073709551616}', "is_active": "on"}
    response = client.post("/admin/contacts/segment/add/", data)
    assert response.status_code == 200
    assert "whole numbers must fit in 64 bits" in html.unescape(response.content.decode())
    assert not Segment.objects.filter(name="Big").exists()
    data["definition"] = "[" * 100_000 + "]" * 100_000
    response = client.post("/admin/contacts/segment/add/", data)
    assert response.status_code == 200
    assert "nested too deeply" in response.content.decode()


@pytest.mark.parametrize(("definition", "segment_id", "message"), [
    ('{"field": "score", "op": "gt", "value": 18446744073709551616}', "", "whole numbers must fit in 64 bits"),
    ('{"field": "score", "op": "gt", "value": NaN}', "", "expected a finite number"),
    ("[" * 100_000, "", "nested too deeply"),
    ('{"tag": "vip"}', "²", None),
    ('{"tag": "vip"}', "9" * 400, None),
])
def test_the_segment_preview_answers_bad_input_with_errors(world: dict[str, Any], client: Client, role_users: Any,
                                                           definition: str, segment_id: str,
                                                           message: str | None) -> None:
    client.force_login(role_users["marketer"])
    response = client.post("/admin/contacts/segment/preview/", {"definition": definition, "segment_id": segment_id})
    assert response.status_code == 200
    errors = response.json()["errors"]
    if message is None:
        assert errors == []
    else:
        assert any(message in e for e in errors), errors


def test_the_preview_reports_a_query_the_database_refuses(world: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    refused = Q(RawSQL("abs(-9223372036854775807 - 1) > %s", (0,), output_field=BooleanField()))  # noqa: S611 (constant SQL)
    monkeypatch.setattr(segment_services, "compile_with", lambda tree, **kwargs: refused)
    result = segment_preview(definition_text='{"tag": "vip"}')
    assert result["count"] is None
    assert result["errors"][0].startswith("the database could not run this filter: ")
