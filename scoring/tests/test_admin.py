"""Scoring admin: rule validation, read-only ledger and jobs, and what each role may do."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from contacts.models import Segment
from scoring.models import GradeBand, RecomputeJob, ScoreEntry, ScoringRule
from scoring.tests.factories import NOW, behaviour_rule, contact

pytestmark = pytest.mark.django_db

BLANK = {"name": "Rule", "kind": "behaviour", "is_active": "on", "points": "5", "event_type": "",
         "property_filters": "{}", "repeatable": "on", "cap_points": "", "cap_window_days": "", "half_life_days": "",
         "conditions": "{}"}


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def errors(response: Any) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: [str(e) for e in errs] for name, errs in form.errors.items()}


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({}, "event_type", "Behaviour rules need the event type they score."),
    ({"event_type": "visit", "cap_points": "10"}, "cap_window_days", "A cap needs both the points and the window"),
    ({"event_type": "visit", "cap_window_days": "3"}, "cap_points", "A cap needs both the points and the window"),
    ({"event_type": "visit", "cap_points": "-10", "cap_window_days": "3"}, "cap_points", "same sign"),
    ({"event_type": "visit", "property_filters": "[1]"}, "property_filters", "Use an object"),
    ({"kind": "fit", "conditions": "{}"}, "conditions", "Fit rules need conditions"),
    ({"kind": "fit", "conditions": '{"field": "no_such_field", "op": "eq", "value": 1}'}, "conditions", ""),
    ({"kind": "fit", "conditions": '{"tag": "vip"}', "half_life_days": "5"}, "half_life_days", "do not decay"),
])
def test_rule_form_validation(role_users: dict[str, User], changes: dict[str, str], field: str, message: str) -> None:
    response = client_for(role_users["marketer"]).post("/admin/scoring/scoringrule/add/", {**BLANK, **changes})
    assert response.status_code == 200
    assert field in errors(response)
    assert any(message in error for error in errors(response)[field])
    assert not ScoringRule.objects.exists()
    assert not RecomputeJob.objects.exists()


def test_a_valid_fit_rule_is_saved_with_a_recompute_job(role_users: dict[str, User]) -> None:
    response = client_for(role_users["marketer"]).post("/admin/scoring/scoringrule/add/", {
        **BLANK, "name": "VIPs", "kind": "fit", "conditions": '{"all": [{"tag": "vip"}]}'})
    assert response.status_code == 302
    assert ScoringRule.objects.get().conditions == {"all": [{"tag": "vip"}]}
    assert RecomputeJob.objects.get().reason == "rule added: VIPs"


def test_editing_grade_bands_queues_a_recompute(role_users: dict[str, User]) -> None:
    response = client_for(role_users["marketer"]).post("/admin/scoring/gradeband/add/",
                                                       {"grade": "A", "min_score": "50", "is_mql": "on"})
    assert response.status_code == 302
    assert RecomputeJob.objects.get().reason == "grade band added: A"


def test_a_grade_band_from_zero_is_refused(role_users: dict[str, User]) -> None:
    # Contacts at 0 include every contact without a ContactScore row: they have no grade.
    response = client_for(role_users["marketer"]).post("/admin/scoring/gradeband/add/",
                                                       {"grade": "D", "min_score": "0"})
    assert response.status_code == 200
    assert "greater than or equal to 1" in response.content.decode()
    assert not GradeBand.objects.exists()
    assert not RecomputeJob.objects.exists()


def test_ledger_and_jobs_are_read_only_in_the_admin(role_users: dict[str, User]) -> None:
    admin = client_for(role_users["admin"])
    entry = ScoreEntry.objects.create(contact=contact(), rule_name="Visits", points=5, created_at=NOW)
    job = RecomputeJob.objects.create(reason="r")
    assert admin.get("/admin/scoring/scoreentry/").status_code == 200
    assert admin.get("/admin/scoring/scoreentry/add/").status_code == 403
    assert admin.post(f"/admin/scoring/scoreentry/{entry.pk}/change/", {"points": "50"}).status_code == 403
    assert admin.post(f"/admin/scoring/scoreentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin.post(f"/admin/scoring/recomputejob/{job.pk}/change/", {"reason": "x"}).status_code == 403
    assert admin.post(f"/admin/scoring/recomputejob/{job.pk}/delete/", {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.points == 5


def test_marketers_may_start_a_recompute(role_users: dict[str, User]) -> None:
    response = client_for(role_users["marketer"]).post("/admin/scoring/recomputejob/add/", {"reason": "by hand"})
    assert response.status_code == 302
    job = RecomputeJob.objects.get()
    assert (job.reason, job.status, job.created_by) == ("by hand", "queued", role_users["marketer"])


def test_sales_cannot_edit_scoring_rules(role_users: dict[str, User]) -> None:
    sales = client_for(role_users["sales"])
    rule = behaviour_rule()
    assert sales.get("/admin/scoring/scoringrule/add/").status_code == 403
    assert sales.get(f"/admin/scoring/scoringrule/{rule.pk}/change/").status_code == 403
    assert sales.post(f"/admin/scoring/scoringrule/{rule.pk}/change/", {**BLANK, "event_type": "x"}).status_code == 403
    assert sales.get("/admin/scoring/gradeband/add/").status_code == 403
    assert sales.get("/admin/scoring/recomputejob/add/").status_code == 403
    assert sales.get("/admin/scoring/scoreentry/").status_code == 200  # sales may read the ledger
    rule.refresh_from_db()
    assert rule.event_type == "page_view"


def test_sales_cannot_edit_segments(role_users: dict[str, User]) -> None:
    sales = client_for(role_users["sales"])
    segment = Segment.objects.create(name="Enterprise", definition={"all": []})
    assert sales.get("/admin/contacts/segment/add/").status_code == 403
    # sales may read a segment (view permission): the page is read-only, and a save is refused
    assert sales.get(f"/admin/contacts/segment/{segment.pk}/change/").status_code == 200
    changed = sales.post(f"/admin/contacts/segment/{segment.pk}/change/", {"name": "Hacked", "definition": "{}"})
    assert changed.status_code == 403
    assert sales.post(f"/admin/contacts/segment/{segment.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Segment.objects.get(pk=segment.pk).name == "Enterprise"
