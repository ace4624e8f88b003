"""Issue 15, item 5: manual enrollment from the versioning screen (staging takes test contacts
only), the dashboard's production and staging enrollments apart and suppressed sends apart from
sent ones, and step runs listed with their contact and workflow."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from automation.models import Enrollment, StepRun
from automation.selectors import workflow_dashboard
from automation.tests.conftest import advance, deploy, make_contact
from automation.tests.test_content_versions import OLD, pricing_file
from campaigns.delivery import delivery_run_batch
from campaigns.services import suppression_add

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_marketer_enrolls_by_email_staging_takes_test_contacts_only(role_users, sender, sink) -> None:
    workflow = deploy(pricing_file(OLD))
    deploy(pricing_file("Staged pricing"), stage_only=True)
    make_contact("real@example.com", first_name="Ada")
    make_contact("qa@example.com", first_name="Q", is_test=True)
    marketer = client_for(role_users["marketer"])
    act = f"/admin/automation/workflow/{workflow.pk}/act/"
    page = marketer.post(act, {"action": "enroll", "to": "staging", "emails": "Real@Example.com\nqa@example.com, "
                               "nobody@example.com"}, follow=True).content.decode()
    assert "Enrolled into staging: qa@example.com." in page
    assert "Not test contacts (staging takes the test audience only): real@example.com" in page
    assert "No contact with this email: nobody@example.com" in page
    assert list(Enrollment.objects.values_list("contact__email", "is_staging", "version__state")) == \
        [("qa@example.com", True, "staging")]
    page = marketer.post(act, {"action": "enroll", "to": "production", "emails": "real@example.com"},
                         follow=True).content.decode()
    assert "Enrolled into production: real@example.com." in page
    assert Enrollment.objects.get(contact__email="real@example.com").version.state == "production"
    # a bad address is named; sales (no change permission) cannot enroll
    page = marketer.post(act, {"action": "enroll", "to": "production", "emails": "not an email"},
                         follow=True).content.decode()
    assert "&#x27;not an email&#x27;" in page
    assert client_for(role_users["sales"]).post(act, {"action": "enroll", "to": "production",
                                                      "emails": "real@example.com"}).status_code == 403
    # the real contact's email goes out with the production content; the dashboard shows both audiences
    advance()
    delivery_run_batch(sender=sender)
    dashboard = workflow_dashboard(workflow=workflow)
    assert dashboard.audiences["production"]["enrolled"] == 1
    assert dashboard.audiences["staging"]["enrolled"] == 1


def test_dashboard_counts_suppressed_sends_apart_from_sent(role_users, sender, sink) -> None:
    workflow = deploy(pricing_file(OLD))
    make_contact("sent@example.com", first_name="Ada")
    make_contact("gone@example.com", first_name="Bo")
    suppression_add(email="gone@example.com", reason="unsubscribed")
    marketer = client_for(role_users["marketer"])
    marketer.post(f"/admin/automation/workflow/{workflow.pk}/act/",
                  {"action": "enroll", "to": "production", "emails": "sent@example.com, gone@example.com"})
    advance()
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [["sent@example.com"]]
    steps = workflow_dashboard(workflow=workflow).steps
    assert steps["followup"]["sent"] == 1
    assert steps["followup"]["suppressed"] == 1
    page = marketer.get(f"/admin/automation/workflow/{workflow.pk}/versions/").content.decode()
    assert '<td class="sent">1</td><td class="suppressed">1</td>' in page
    assert '<tr class="audience-production"><th>production</th>' in page


def test_step_runs_list_their_contact_and_workflow_in_one_query(role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    for i in range(3):
        make_contact(f"c{i}@example.com")
    client_for(role_users["marketer"]).post(f"/admin/automation/workflow/{workflow.pk}/act/", {
        "action": "enroll", "to": "production", "emails": "c0@example.com, c1@example.com, c2@example.com"})
    advance()
    assert StepRun.objects.count() == 3
    ops = client_for(role_users["ops"])
    with CaptureQueriesContext(connection) as few:
        page = ops.get("/admin/automation/steprun/").content.decode()
    assert "c2@example.com" in page
    assert "pricing v1" in page
    runs = [q["sql"] for q in few.captured_queries if '"automation_steprun"' in q["sql"]]
    contacts = [q["sql"] for q in few.captured_queries if 'FROM "contacts_contact"' in q["sql"]]
    assert len(runs) <= 3  # count, filter counts, the page
    assert contacts == []  # joined, not one query per row
