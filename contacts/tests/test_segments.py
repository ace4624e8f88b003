"""Segment membership: full refresh, incremental updates for the event pipeline, the jobs, and the
admin editor (live preview, save queues a refresh, "Refresh now", who may do what)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts.models import Contact, CustomField, Event, Segment, SegmentMembership, Tag
from contacts.segments.compiler import segment_queryset
from contacts.segments.services import (
    segment_refresh,
    segment_save,
    segments_refresh_all,
    segments_update_contacts,
)
from contacts.segments.tasks import segment_refresh_job, segments_refresh_all_job
from core.queues import get_connection, get_queue
from core.testing.scores import score_set

pytestmark = pytest.mark.django_db

PREVIEW_URL = "/admin/contacts/segment/preview/"
VIP = {"tag": "vip"}
HIGH_SCORE = {"field": "score", "op": "gte", "value": 50}


@pytest.fixture(autouse=True)
def empty_queues() -> Iterator[None]:
    get_connection().flushdb()
    yield
    get_connection().flushdb()


def contact(email: str, *, tags: tuple[str, ...] = (), score: int | None = None, **fields: Any) -> Contact:
    c = Contact.objects.create(email=email, **fields)
    c.tags.set([Tag.objects.get_or_create(name=t)[0] for t in tags])
    if score is not None:
        score_set(c, score)
    return c


def members(segment: Segment) -> set[str]:
    return set(SegmentMembership.objects.filter(segment=segment).values_list("contact__email", flat=True))


def segment_events(**filters: Any) -> set[tuple[str, str, str]]:
    """(event type, contact email, segment name) of the segment events recorded so far."""
    events = Event.objects.filter(event_type__in=["segment_entered", "segment_left"], **filters)
    return {(e.event_type, e.contact.email, e.properties["segment"]) for e in events.select_related("contact")}


# --- Full refresh ------------------------------------------------------------------------------------------


def test_refresh_adds_matching_contacts_removes_the_rest_and_records_each_change() -> None:
    ann, ben = contact("ann@example.com", tags=("vip",)), contact("ben@example.com", tags=("vip",))
    contact("cy@example.com")
    segment = Segment.objects.create(name="VIPs", definition=VIP)

    assert segment_refresh(segment=segment) == (2, 0)

    segment.refresh_from_db()
    assert members(segment) == {"ann@example.com", "ben@example.com"}
    assert segment.member_count == 2
    assert segment.refreshed_at is not None
    assert segment_events() == {("segment_entered", "ann@example.com", "VIPs"),
                                ("segment_entered", "ben@example.com", "VIPs")}
    entered = Event.objects.get(contact=ann)
    assert entered.source == "system"
    assert entered.properties == {"segment_id": segment.pk, "segment": "VIPs"}

    # When ann loses the tag and cy gains it: one leaves, one enters.
    ann.tags.clear()
    Contact.objects.get(email="cy@example.com").tags.add(Tag.objects.get(name="vip"))
    Event.objects.all().delete()
    assert segment_refresh(segment=segment) == (1, 1)
    assert members(segment) == {"ben@example.com", "cy@example.com"}
    assert segment_events() == {("segment_left", "ann@example.com", "VIPs"),
                                ("segment_entered", "cy@example.com", "VIPs")}
    assert Segment.objects.get(pk=segment.pk).member_count == 2

    # Nothing changed: nothing recorded.
    assert segment_refresh(segment=segment) == (0, 0)
    assert Event.objects.count() == 2
    assert ben.segment_memberships.count() == 1


def test_refresh_uses_the_whole_definition_including_events_and_nested_segments() -> None:
    ann, ben = contact("ann@example.com", tags=("vip",)), contact("ben@example.com", tags=("vip",))
    now = timezone.now()
    Event.objects.create(contact=ann, event_type="page_view", occurred_at=now, source="test")
    vips = Segment.objects.create(name="VIPs", definition=VIP)
    active_vips = Segment.objects.create(name="Active VIPs", definition={"all": [
        {"segment": vips.pk}, {"event": "page_view", "within_days": 7}]})

    segment_refresh(segment=active_vips)

    assert members(active_vips) == {"ann@example.com"}
    assert members(vips) == set()  # the nested segment's definition is used, not its stored members
    assert ben.segment_memberships.count() == 0


def test_refresh_all_lets_time_windows_expire_and_reports_broken_segments() -> None:
    ann = contact("ann@example.com")
    visit = Event.objects.create(contact=ann, event_type="visit", occurred_at=timezone.now(), source="test")
    recent = Segment.objects.create(name="Recent visitors", definition={"event": "visit", "within_days": 7})
    CustomField.objects.create(key="plan", label="Plan")
    broken = Segment.objects.create(name="Plan set", definition={"attribute": "plan", "op": "is_set"})
    segments_refresh_all()
    assert members(recent) == {"ann@example.com"}

    # Eight days pass without a visit (no event arrives to trigger an incremental update),
    # and the custom field the other segment uses is deleted.
    Event.objects.filter(pk=visit.pk).update(occurred_at=timezone.now() - dt.timedelta(days=8))
    CustomField.objects.all().delete()

    outcome = segments_refresh_all_job()

    assert members(recent) == set()
    assert outcome[recent.pk] == (0, 1)
    assert "unknown custom field 'plan'" in str(outcome[broken.pk])


def test_refresh_all_records_a_database_error_on_its_segment_and_refreshes_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contacts.segments import services

    contact("ann@example.com", tags=("vip",))
    broken = Segment.objects.create(name="Broken", definition=VIP)
    vips = Segment.objects.create(name="VIPs", definition=VIP)
    insert = services._insert_matching

    def failing(segment: Segment, table: str, now: Any) -> list[int]:
        if segment.pk == broken.pk:  # a real statement failing in the database (on PostgreSQL it
            with connection.cursor() as cursor:  # also aborts the transaction, as a timeout would)
                cursor.execute("SELECT * FROM no_such_table_x")
        return insert(segment, table, now)

    monkeypatch.setattr(services, "_insert_matching", failing)
    outcome = segments_refresh_all_job()

    # the database's own error is reported, not a follow-up "current transaction is aborted"
    assert "no_such_table_x" in str(outcome[broken.pk])
    assert str(outcome[broken.pk]).split(":")[0] in {"ProgrammingError", "OperationalError"}
    assert outcome[vips.pk] == (1, 0)
    assert members(vips) == {"ann@example.com"}
    assert members(broken) == set()  # its transaction rolled back: nothing half-written
    broken.refresh_from_db()
    assert broken.refresh_failed_at is not None
    assert broken.refresh_error == outcome[broken.pk]

    # the next refresh that works clears it, whoever runs it
    monkeypatch.setattr(services, "_insert_matching", insert)
    assert segment_refresh(segment=broken) == (1, 0)
    broken.refresh_from_db()
    assert (broken.refresh_failed_at, broken.refresh_error) == (None, "")


def test_refresh_job_refreshes_an_active_segment_and_ignores_missing_or_inactive_ones() -> None:
    contact("ann@example.com", tags=("vip",))
    segment = Segment.objects.create(name="VIPs", definition=VIP)
    paused = Segment.objects.create(name="Paused", definition=VIP, is_active=False)

    assert segment_refresh_job(segment.pk) == (1, 0)
    assert segment_refresh_job(paused.pk) is None
    assert segment_refresh_job(999_999) is None
    assert members(paused) == set()


# --- Incremental update ------------------------------------------------------------------------------------


def test_update_contacts_moves_only_the_given_contacts_across_active_segments() -> None:
    ann = contact("ann@example.com", score=10)
    ben = contact("ben@example.com", tags=("vip",), score=80)
    cy = contact("cy@example.com", tags=("vip",))
    vips = Segment.objects.create(name="VIPs", definition=VIP)
    high = Segment.objects.create(name="High score", definition=HIGH_SCORE)
    paused = Segment.objects.create(name="Paused", definition=VIP, is_active=False)
    segments_refresh_all()
    Event.objects.all().delete()

    # ann becomes a VIP with a high score; ben loses his tag; cy too, but cy is not in this batch.
    ann.tags.add(Tag.objects.get(name="vip"))
    score_set(ann, 75)
    ben.tags.clear()
    cy.tags.clear()

    events = segments_update_contacts(contact_ids=[ann.pk, ben.pk, ann.pk])

    assert {(e.event_type, e.contact_id, e.properties["segment"]) for e in events} == {
        ("segment_entered", ann.pk, "VIPs"), ("segment_entered", ann.pk, "High score"),
        ("segment_left", ben.pk, "VIPs"),
    }
    assert all(e.pk and e.source == "system" for e in events)
    # created processed: the callers (event pipeline, contacts_changed) score them in the same transaction
    assert Event.objects.count() == Event.objects.filter(processed_at__isnull=False).count() == 3
    assert members(vips) == {"ann@example.com", "cy@example.com"}
    assert members(high) == {"ann@example.com", "ben@example.com"}
    assert members(paused) == set()
    assert Segment.objects.get(pk=vips.pk).member_count == 2
    assert Segment.objects.get(pk=high.pk).member_count == 2

    # Running it again changes nothing; an unknown contact id is harmless.
    assert segments_update_contacts(contact_ids=[ann.pk, ben.pk, 999_999]) == []
    assert segments_update_contacts(contact_ids=[]) == []


def test_update_contacts_agrees_with_a_full_refresh() -> None:
    CustomField.objects.create(key="age", label="Age", field_type="number")
    people = [contact(f"p{i}@example.com", score=i * 10, tags=("vip",) if i % 3 == 0 else (),
                      attributes={"age": 20 + i} if i % 2 else {}) for i in range(12)]
    definitions = [VIP, HIGH_SCORE, {"any": [{"attribute": "age", "op": "lt", "value": 25}, {"not": VIP}]},
                   {"all": [{"field": "email", "op": "contains", "value": "1"}, {"event": "x", "did": False}]}]
    segments = [Segment.objects.create(name=f"s{i}", definition=d) for i, d in enumerate(definitions)]

    segments_update_contacts(contact_ids=[p.pk for p in people])

    for segment in segments:
        expected = set(segment_queryset(segment).values_list("email", flat=True))
        assert members(segment) == expected
        assert Segment.objects.get(pk=segment.pk).member_count == len(expected)
        assert segment_refresh(segment=segment) == (0, 0)


def test_update_contacts_skips_a_segment_whose_definition_no_longer_compiles() -> None:
    ann = contact("ann@example.com", tags=("vip",))
    CustomField.objects.create(key="plan", label="Plan")
    Segment.objects.create(name="Plan set", definition={"attribute": "plan", "op": "is_set"})
    vips = Segment.objects.create(name="VIPs", definition=VIP)
    CustomField.objects.all().delete()

    events = segments_update_contacts(contact_ids=[ann.pk])

    assert [(e.event_type, e.properties["segment"]) for e in events] == [("segment_entered", "VIPs")]
    assert members(vips) == {"ann@example.com"}


def test_update_contacts_uses_the_same_number_of_queries_for_3_or_24_contacts() -> None:
    # 24 contacts x 4 segments = 96 events: one bulk INSERT on SQLite too (Django batches at 999
    # parameters, 10 per event), so any per-contact query shows up as a difference.
    for i in range(3):
        Segment.objects.create(name=f"VIPs {i}", definition={"all": [VIP, {"event": "visit", "did": False}]})
    Segment.objects.create(name="High score", definition=HIGH_SCORE)

    def queries_for(count: int, prefix: str) -> int:
        batch = [contact(f"{prefix}{i}@example.com", tags=("vip",), score=60) for i in range(count)]
        segments_update_contacts(contact_ids=[c.pk for c in batch])  # everyone enters
        Tag.objects.get(name="vip").contacts.remove(*batch)
        for c in batch:
            score_set(c, 0)
        with CaptureQueriesContext(connection) as captured:
            events = segments_update_contacts(contact_ids=[c.pk for c in batch])  # everyone leaves
        assert len(events) == 4 * count
        return len(captured.captured_queries)

    assert queries_for(3, "few") == queries_for(24, "many")


# --- Saving ------------------------------------------------------------------------------------------------


def test_saving_a_segment_validates_its_definition_and_queues_a_refresh_after_commit(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with pytest.raises(ValidationError) as raised:
        segment_save(segment=Segment(name="Bad", definition={"field": "score", "op": "bigger", "value": 1}))
    assert raised.value.message_dict == {"definition": ["op: unknown op 'bigger'"]}

    with django_capture_on_commit_callbacks(execute=True):
        segment = segment_save(segment=Segment(name="VIPs", definition=VIP))
        assert get_queue("default").count == 0  # not before the commit

    job = get_queue("default").jobs[0]
    assert job.func_name == "contacts.segments.tasks.segment_refresh_job"
    assert job.args == (segment.pk,)


# --- Admin -------------------------------------------------------------------------------------------------


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def preview(client: Client, tree: Any, **extra: Any) -> Any:
    text = tree if isinstance(tree, str) else json.dumps(tree)
    return client.post(PREVIEW_URL, {"definition": text, **extra})


def test_marketer_gets_a_live_count_and_sample_for_an_unsaved_definition(role_users: dict[str, User]) -> None:
    for i in range(25):
        contact(f"vip{i:02}@example.com", tags=("vip",), first_name="Vip", last_name=str(i), score=i)
    contact("other@example.com")
    marketer = client_for(role_users["marketer"])

    answer = preview(marketer, VIP)

    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == 25
    assert body["errors"] == []
    assert len(body["sample"]) == 20
    assert body["sample"][0] == {"email": "vip24@example.com", "name": "Vip 24", "score": 24}
    never_scored = preview(marketer, {"field": "email", "op": "eq", "value": "other@example.com"}).json()
    assert never_scored["sample"] == [{"email": "other@example.com", "name": "", "score": 0}]
    assert Segment.objects.count() == 0
    assert SegmentMembership.objects.count() == 0


def test_live_preview_reports_every_problem_and_bad_json(role_users: dict[str, User]) -> None:
    marketer = client_for(role_users["marketer"])
    body = preview(marketer, {"all": [VIP, {"field": "score", "op": "bigger"}, {"tag": "a", "list": "b"}]}).json()
    assert body["count"] is None
    assert body["errors"][0] == "all[1].op: unknown op 'bigger'"
    assert body["errors"][1].startswith("all[2]: expected exactly one of")
    assert preview(marketer, '{"all": [').json()["errors"][0].startswith("not valid JSON:")
    # A segment being edited may not refer back to itself.
    segment = Segment.objects.create(name="Self", definition=VIP)
    body = preview(marketer, {"segment": segment.pk}, segment_id=str(segment.pk)).json()
    assert body["errors"] == [f"segment: segment {segment.pk} refers back to itself ({segment.pk} -> {segment.pk})"]


def test_sales_and_ops_may_view_segments_but_not_edit_or_preview(role_users: dict[str, User]) -> None:
    segment = Segment.objects.create(name="VIPs", definition=VIP, member_count=7)
    for role in ("sales", "ops"):
        viewer = client_for(role_users[role])
        listing = viewer.get("/admin/contacts/segment/")
        assert listing.status_code == 200
        assert b"VIPs" in listing.content
        assert viewer.get(f"/admin/contacts/segment/{segment.pk}/change/").status_code == 200
        edit = viewer.post(f"/admin/contacts/segment/{segment.pk}/change/",
                           {"name": "Mine", "definition": json.dumps(VIP), "is_active": "on"})
        assert edit.status_code == 403
        assert preview(viewer, VIP).status_code == 403
        assert viewer.get("/admin/contacts/segment/add/").status_code == 403
    assert Segment.objects.get(pk=segment.pk).name == "VIPs"
    assert client_for(role_users["outsider"]).post(PREVIEW_URL, {"definition": "{}"}).status_code == 403


def test_marketer_creates_a_segment_in_the_admin_and_its_refresh_is_queued(
    role_users: dict[str, User], django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    marketer = client_for(role_users["marketer"])
    page = marketer.get("/admin/contacts/segment/add/")
    assert page.status_code == 200
    # The live preview is asked for by htmx (the vendored copy) as the definition changes.
    assert b'hx-post="/admin/contacts/segment/preview/"' in page.content
    assert b"/static/vendor/htmx/htmx.min.js" in page.content

    invalid = marketer.post("/admin/contacts/segment/add/", {
        "name": "Leads", "description": "", "is_active": "on",
        "definition": json.dumps({"not": {"field": "stage", "op": "eq", "value": "lead"}})})
    assert invalid.status_code == 200
    assert "not.field: unknown field &#x27;stage&#x27;" in invalid.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        saved = marketer.post("/admin/contacts/segment/add/", {
            "name": "Leads", "description": "", "is_active": "on",
            "definition": json.dumps({"field": "lifecycle_stage", "op": "eq", "value": "lead"})})
    assert saved.status_code == 302
    segment = Segment.objects.get(name="Leads")
    assert [(j.func_name, j.args) for j in get_queue("default").jobs] == [
        ("contacts.segments.tasks.segment_refresh_job", (segment.pk,))]


def test_refresh_now_action_queues_a_refresh_per_selected_segment(
    role_users: dict[str, User], django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    a = Segment.objects.create(name="A", definition=VIP)
    b = Segment.objects.create(name="B", definition=HIGH_SCORE)
    marketer = client_for(role_users["marketer"])
    with django_capture_on_commit_callbacks(execute=True):
        answer = marketer.post("/admin/contacts/segment/", {"action": "refresh_now", "_selected_action": [a.pk, b.pk]},
                               follow=True)
    assert "Refresh queued for 2 segment(s)." in answer.content.decode()
    assert sorted(j.args[0] for j in get_queue("default").jobs) == sorted([a.pk, b.pk])
    # Sales does not get the action.
    listing = client_for(role_users["sales"]).get("/admin/contacts/segment/")
    assert b"refresh_now" not in listing.content
