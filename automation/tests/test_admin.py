"""The versioning screen through the admin: import, diff, graphs, validation, simulation,
promote/rollback gated by role, dashboard; and a browser run of the issue's acceptance flow."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from automation.models import Workflow
from automation.tests.conftest import make_contact, wf_file
from conftest import admin_login
from core.testing.scores import score_set

pytestmark = pytest.mark.django_db

V1 = [{"id": "hi", "type": "send_email", "template": "hi"}, {"id": "w", "type": "wait", "duration": "1d"},
      {"id": "bye", "type": "send_email", "template": "bye"}]
V2: list[dict[str, Any]] = [
    {"id": "hi", "type": "send_email", "template": "hi2"}, {"id": "w", "type": "wait", "duration": "2d"},
    {"id": "vip", "type": "branch", "if": {"score_above": 50}, "then": "bye", "else": "end"},
    {"id": "bye", "type": "send_email", "template": "bye"}]
TWO_VERSIONS = [wf_file(steps=V1, templates=["hi", "bye"]), wf_file(steps=V2, templates=["hi2", "bye"])]


def client_for(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def import_both(client: Client) -> Workflow:
    for text in TWO_VERSIONS:
        response = client.post("/admin/automation/workflow/import/", {"text": text, "to": "staging"})
        assert response.status_code == 302, response.content.decode()[:2000]
    return Workflow.objects.get()


def test_marketer_imports_sees_diff_graphs_and_simulation_but_cannot_promote(role_users) -> None:
    marketer = client_for(role_users["marketer"])
    workflow = import_both(marketer)
    # v1 was staged, then v2 replaced it in staging: promote v1 first as an approver
    assert dict(workflow.versions.values_list("number", "state")) == {1: "archived", 2: "staging"}
    score_set(make_contact("vip@example.com"), 80)
    url = f"/admin/automation/workflow/{workflow.pk}/versions/"
    page = marketer.get(url, {"simulate": str(workflow.versions.get(number=2).pk), "contacts": "vip@example.com"})
    html = page.content.decode()
    assert page.status_code == 200
    assert '<tr class="diff-added"><td>vip</td>' in html
    assert html.count('aria-label="steps of v') == 1  # staging only; no production yet
    [simulation] = page.context["simulations"]
    assert [(p.step_id, p.note) for p in simulation.path] == [
        ("hi", "would send hi2 r1 “hi2 for {{ contact.first_name }}” to the staging recipient"),
        ("w", "would wait 2d"), ("vip", "condition true"),
        ("bye", "would send bye r1 “bye for {{ contact.first_name }}” to the staging recipient")]
    assert "vip</span> (condition true)" in html
    assert 'id="promote-denied"' in html
    denied = marketer.post(f"/admin/automation/workflow/{workflow.pk}/act/", {"action": "promote"}, follow=True)
    assert "promote_workflow" in denied.content.decode()
    assert not workflow.versions.filter(state="production").exists()


def test_approver_promotes_and_rolls_back(role_users) -> None:
    approver = client_for(role_users["approver"])
    marketer = client_for(role_users["marketer"])
    for text in TWO_VERSIONS:
        marketer.post("/admin/automation/workflow/import/", {"text": text})
    workflow = Workflow.objects.get()
    act = f"/admin/automation/workflow/{workflow.pk}/act/"
    for number in (1, 2):
        approver.post(act, {"action": "stage", "version": workflow.versions.get(number=number).pk})
        approver.post(act, {"action": "promote", "migrate": "0", "confirm": "1"})
    assert dict(workflow.versions.values_list("number", "state")) == {1: "archived", 2: "production"}
    html = approver.get(f"/admin/automation/workflow/{workflow.pk}/versions/").content.decode()
    assert 'value="Roll back to v1"' in html
    approver.post(act, {"action": "rollback", "confirm": "1"})
    assert dict(workflow.versions.values_list("number", "state")) == {1: "production", 2: "archived"}


def test_import_errors_are_listed_with_step_ids(role_users) -> None:
    marketer = client_for(role_users["marketer"])
    bad = wf_file(steps=[{"id": "a", "type": "send_email", "template": "missing"}])
    html = marketer.post("/admin/automation/workflow/import/", {"text": bad}).content.decode()
    assert "nurture step &#x27;a&#x27;: unknown template &#x27;missing&#x27;" in html


def test_sales_cannot_see_workflows(role_users) -> None:
    assert client_for(role_users["sales"]).get("/admin/automation/workflow/").status_code == 403


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_marketer_imports_and_simulates_approver_promotes_and_rolls_back(page, role_users) -> None:
    score_set(make_contact("sim@example.com"), 80)
    # as marketer: import v1 straight to staging and v2 as a draft; open the versioning screen
    admin_login(page, "marketer", "pw-marketer")
    for text, to in zip(TWO_VERSIONS, ("staging", "draft"), strict=True):
        page.goto("/admin/automation/workflow/import/")
        page.fill("textarea[name=text]", text)
        page.select_option("select[name=to]", to)
        page.click("input[name=_import]")
        page.wait_for_selector("#workflow-versions")
    assert page.locator("#version-list tbody tr").count() == 2
    # simulate the draft (newest, preselected) for a chosen contact: no side effects, a path
    page.fill("input[name=contacts]", "sim@example.com")
    page.click("#simulate-form input[type=submit]")
    page.wait_for_selector("#simulation")
    assert "vip (condition true)" in page.locator("#simulation").inner_text()
    # a marketer sees no promote button and is told why
    assert page.locator("#promote-denied").is_visible()
    assert page.locator("input[name=promote]").count() == 0
    # as approver: promote v1, stage v2, see the diff, promote v2, roll back to v1
    page.context.clear_cookies()
    admin_login(page, "approver", "pw-approver")
    workflow = Workflow.objects.get()
    page.goto(f"/admin/automation/workflow/{workflow.pk}/versions/")
    page.click("input[name=promote]")
    # The button sits below the emails' preview frames, which lay out as they scroll into view:
    # scroll to it first, so the click lands on it and not where it was a moment before.
    page.locator("#confirm-form input[type=submit]").scroll_into_view_if_needed()
    # The button sits below the emails' preview frames, which lay out as they scroll into view:
    # scroll to it first, so the click lands on it and not where it was a moment before.
    page.locator("#confirm-form input[type=submit]").scroll_into_view_if_needed()
    page.click("input[name=confirm-promote]")  # promoting asks first, showing what changes
    page.wait_for_selector("#workflow-versions")
    page.click("input[name=stage-2]")
    page.wait_for_selector("#workflow-versions")
    assert page.locator("#step-diff tr.diff-added td").first.inner_text() == "vip"
    assert page.locator("#production-column svg").count() == 1
    assert page.locator("#staging-column svg").count() == 1
    page.click("input[name=promote]")
    # The button sits below the emails' preview frames, which lay out as they scroll into view:
    # scroll to it first, so the click lands on it and not where it was a moment before.
    page.locator("#confirm-form input[type=submit]").scroll_into_view_if_needed()
    page.click("input[name=confirm-promote]")
    page.wait_for_selector("#workflow-versions")
    assert "v2" in page.locator("#production-column h3").inner_text()
    page.click("input[name=rollback]")
    # The button sits below the emails' preview frames, which lay out as they scroll into view:
    # scroll to it first, so the click lands on it and not where it was a moment before.
    page.locator("#confirm-form input[type=submit]").scroll_into_view_if_needed()
    page.click("input[name=confirm-rollback]")
    page.wait_for_selector("#workflow-versions")
    assert "v1" in page.locator("#production-column h3").inner_text()
    assert dict(workflow.versions.values_list("number", "state")) == {1: "production", 2: "archived"}
