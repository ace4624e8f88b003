"""The sales lead views: ranking, filters, paging, breakdown, CSV export and who may see them."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts.models import Contact, Segment, SegmentMembership
from core.testing.scores import score_set
from scoring.models import ScoreEntry
from scoring.selectors import LeadFilters, lead_score_breakdown, leads_list, week_start
from scoring.services import score_events
from scoring.tests.factories import NOW, bands, behaviour_rule, contact, event

pytestmark = pytest.mark.django_db


@pytest.fixture
def sales(role_users: dict[str, User]) -> Client:
    client = Client()
    client.force_login(role_users["sales"])
    return client


def emails(response: object) -> list[str]:
    return [lead.email for lead in response.context["page"]]  # type: ignore[attr-defined]


def test_leads_are_ranked_by_score_then_newest_first(sales: Client) -> None:
    low, high, tie_old, tie_new = (contact(email=f"{n}@x.example") for n in ("low", "high", "tie-old", "tie-new"))
    for who, score in ((low, 1), (high, 90), (tie_old, 40), (tie_new, 40)):
        score_set(who, score)
    response = sales.get("/leads/")
    assert response.status_code == 200
    assert emails(response) == ["high@x.example", "tie-new@x.example", "tie-old@x.example", "low@x.example"]
    assert b'id="site-name"' in response.content  # the admin's look
    assert b"Leads" in response.content


def test_lead_filters(sales: Client, role_users: dict[str, User]) -> None:
    bands()
    rep = role_users["sales"]
    now = timezone.now()
    ann = contact(email="ann@acme.example", company="Acme", first_name="Ann", lifecycle_stage="mql", owner=rep)
    bob = contact(email="bob@globex.example", company="Globex", lifecycle_stage="lead")
    cid = contact(email="cid@initech.example", last_name="Smith")
    score_set(ann, 70, "A")
    score_set(bob, 40, "B")
    Contact.objects.filter(pk=ann.pk).update(mql_at=week_start(now) + dt.timedelta(minutes=1))
    Contact.objects.filter(pk=bob.pk).update(mql_at=week_start(now) - dt.timedelta(minutes=1))
    segment = Segment.objects.create(name="Enterprise", definition={"all": []})
    SegmentMembership.objects.create(segment=segment, contact=bob)

    assert emails(sales.get("/leads/", {"grade": "A"})) == ["ann@acme.example"]
    assert emails(sales.get("/leads/", {"owner": rep.pk})) == ["ann@acme.example"]
    assert emails(sales.get("/leads/", {"lifecycle_stage": "lead"})) == ["bob@globex.example"]
    assert emails(sales.get("/leads/", {"segment": segment.pk})) == ["bob@globex.example"]
    assert emails(sales.get("/leads/", {"mql_this_week": "on"})) == ["ann@acme.example"]
    assert emails(sales.get("/leads/", {"q": "globex"})) == ["bob@globex.example"]
    assert emails(sales.get("/leads/", {"q": "smith"})) == ["cid@initech.example"]
    assert emails(sales.get("/leads/", {"q": "ANN"})) == ["ann@acme.example"]
    assert len(emails(sales.get("/leads/", {"grade": "nonsense"}))) == 3  # a bad filter value filters nothing
    assert emails(sales.get("/leads/", {"grade": "nonsense", "q": "acme"})) == ["ann@acme.example"]
    assert cid.pk


def test_leads_are_paginated_by_50(sales: Client) -> None:
    for i, who in enumerate(Contact.objects.bulk_create([Contact(email=f"p{i:03}@x.example") for i in range(60)])):
        score_set(who, i)
    first, second = sales.get("/leads/"), sales.get("/leads/", {"page": 2})
    assert len(emails(first)) == 50
    assert emails(first)[0] == "p059@x.example"
    assert emails(second) == [f"p{i:03}@x.example" for i in range(9, -1, -1)]
    assert b"51" in second.content  # ranks continue on the next page


def test_every_window_of_the_ranking_is_one_sort_over_all_contacts() -> None:
    """The ranking is read in parts (scores above 0, then 0 with or without a score row, then below
    0): any window, whichever parts it starts and ends in, is the window of one sort by score, then
    newest first; a search reads it in one sorted query, with the same order."""
    scores = [5, 0, None, -3, 5, 12, None, 0, -3, -1, 12, 1, None]  # None: no ContactScore row
    people = [contact(email=f"r{i:02}@x.example") for i in range(len(scores))]
    for who, score in zip(people, scores, strict=True):
        if score is not None:
            score_set(who, score, "A" if score >= 10 else "")
    ranked = [(c.email, scores[people.index(c)] or 0) for c in
              sorted(people, key=lambda c: (-(scores[people.index(c)] or 0), -c.pk))]
    leads = leads_list(filters=LeadFilters())
    assert (leads.count(), len(leads)) == (len(people), len(people))
    assert [(c.email, c.score) for c in leads] == ranked
    assert [(c.email, c.score) for c in leads_list(filters=LeadFilters(q="@x.example"))] == ranked
    for start in range(len(people) + 1):
        for stop in range(start, len(people) + 2):
            assert [(c.email, c.score) for c in leads[start:stop]] == ranked[start:stop], (start, stop)
    assert (leads[0].grade, leads[2].grade, leads[len(people) - 1].grade) == ("A", "", "")
    with pytest.raises(IndexError):
        leads[len(people)]


def test_lead_list_and_export_read_scores_with_the_contacts(sales: Client) -> None:
    """No query per lead: the page and the CSV take the same number of queries for 3 leads or 30."""
    def queries() -> tuple[int, int, int]:
        with CaptureQueriesContext(connection) as page:
            assert sales.get("/leads/").status_code == 200
        with CaptureQueriesContext(connection) as export:
            b"".join(sales.get("/leads/export.csv").streaming_content)  # type: ignore[attr-defined]
        with CaptureQueriesContext(connection) as detail:
            assert sales.get(f"/leads/{Contact.objects.first().pk}/").status_code == 200  # type: ignore[union-attr]
        return len(page), len(export), len(detail)

    def add(numbers: range) -> None:
        for i in numbers:
            who = contact(email=f"n{i}@x.example")
            if i % 3:  # a third without a score row
                score_set(who, i % 7 - 2, "B")  # from -2 to 4

    add(range(3))
    few = queries()
    add(range(3, 30))
    assert queries() == few


def test_week_start_is_monday_midnight() -> None:
    assert week_start(NOW) == dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def test_detail_breaks_the_score_down_by_rule_with_decay_and_counts(sales: Client) -> None:
    behaviour_rule("Visits", points=3)
    behaviour_rule("Webinar", "webinar", points=40, half_life_days=10)
    ann = contact(email="ann@acme.example")
    now = timezone.now()
    old = now - dt.timedelta(days=10)
    score_events(events=[event(ann, at=now), event(ann, at=now), event(ann, "webinar", at=old)], now=now)
    ScoreEntry.objects.create(contact=ann, rule=None, rule_name="Deleted rule", points=-1, created_at=now)
    rows = {row.rule_name: row for row in lead_score_breakdown(contact=ann, now=now)}
    assert (rows["Visits"].entries, rows["Visits"].points, rows["Visits"].effective) == (2, 6, 6.0)
    assert (rows["Webinar"].entries, rows["Webinar"].points, rows["Webinar"].effective) == (1, 40, 20.0)
    assert rows["Deleted rule"].effective == -1.0

    response = sales.get(f"/leads/{ann.pk}/")
    assert response.status_code == 200
    assert [row.rule_name for row in response.context["breakdown"]] == ["Webinar", "Visits", "Deleted rule"]
    assert response.context["breakdown_total"] == 25.0
    assert len(response.context["events"]) == 3
    assert sales.get("/leads/999999/").status_code == 404


def test_timeline_shows_the_50_most_recent_events(sales: Client) -> None:
    ann = contact()
    for i in range(55):
        event(ann, f"e{i}", at=NOW + dt.timedelta(minutes=i))
    shown = sales.get(f"/leads/{ann.pk}/").context["events"]
    assert len(shown) == 50
    assert (shown[0].event_type, shown[-1].event_type) == ("e54", "e5")


def test_csv_export_follows_the_filters_and_escapes_formulas(sales: Client) -> None:
    bands()
    evil = contact(email="evil@x.example", first_name="=HYPERLINK(\"http://evil.example\")", last_name="+1",
                   company="@SUM(A1)", job_title="-2", country="")
    score_set(evil, 50, "A")
    score_set(contact(email="other@x.example", company="\tTab"), 10)
    Contact.objects.filter(email="other@x.example").update(job_title="\rCR")
    response = sales.get("/leads/export.csv", {"grade": "A"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode(), newline="")))  # type: ignore[attr-defined]
    assert [row["email"] for row in rows] == ["evil@x.example"]
    row = rows[0]
    assert (row["first_name"], row["last_name"], row["company"], row["job_title"]) == (
        "'=HYPERLINK(\"http://evil.example\")", "'+1", "'@SUM(A1)", "'-2")
    assert row["score"] == "50"
    content = b"".join(sales.get("/leads/export.csv").streaming_content)  # type: ignore[attr-defined]
    everyone = list(csv.DictReader(io.StringIO(content.decode(), newline="")))
    assert [(r["email"], r["company"], r["job_title"]) for r in everyone][1] == ("other@x.example", "'\tTab", "'\rCR")


@pytest.mark.parametrize("role", ["sales", "marketer", "approver", "admin"])
def test_roles_with_view_leads_may_see_leads(role_users: dict[str, User], role: str) -> None:
    client = Client()
    client.force_login(role_users[role])
    ann = contact()
    assert client.get("/leads/").status_code == 200
    assert client.get(f"/leads/{ann.pk}/").status_code == 200
    assert client.get("/leads/export.csv").status_code == 200


@pytest.mark.parametrize("role", ["ops", "outsider"])
def test_roles_without_view_leads_are_forbidden(role_users: dict[str, User], role: str) -> None:
    client = Client()
    client.force_login(role_users[role])
    ann = contact()
    for url in ("/leads/", f"/leads/{ann.pk}/", "/leads/export.csv"):
        assert client.get(url).status_code == 403


def test_anonymous_visitors_are_sent_to_the_login_page() -> None:
    response = Client().get("/leads/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/leads/")


def test_lead_views_are_read_only(sales: Client) -> None:
    ann = contact()
    assert sales.post("/leads/", {}).status_code == 405
    assert sales.post(f"/leads/{ann.pk}/", {}).status_code == 405


def test_selector_filters_without_a_form() -> None:
    ann = contact(company="Acme")
    assert list(leads_list(filters=LeadFilters(q="acme"))) == [ann]
