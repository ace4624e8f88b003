"""The whole journey in a real browser, each role on its own screens: a marketer imports contacts
(CSV upload in the admin), builds a segment, writes a scoring rule and stages a workflow; an approver
promotes it; the webinar platform reports registrations through the event API; sales finds the new
MQL at the top of /leads/; ops sees the sends on /admin/operations/.

Background work runs in this process between steps (rq SimpleWorker in burst mode), so each step
sees the finished result of the one before: deterministic, no sleeps."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import expect
from rq import SimpleWorker

from automation.models import Workflow
from campaigns.models import Message, MessageStatus
from conftest import admin_login, make_user
from contacts.apikeys import api_key_create
from contacts.models import Contact, Segment, SegmentMembership
from core import roles
from core.queues import get_connection, get_queue
from scoring.models import GradeBand, ScoringRule

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LEADS_CSV = (
    b"Email,First name,Last name,Organisation\n"
    b"ann@acme.example,Ann,Archer,Acme\n"
    b"bob@globex.example,Bob,Baker,Globex\n"
    b"dee@umbrella.example,Dee,Dunn,Umbrella\n"
)
WORKFLOW = """\
templates:
  - key: webinar-welcome
    kind: transactional
    subject: "See you at the webinar, {{ contact.first_name|default:'there' }}"
    html: "<p>Your seat is booked.</p>"
workflows:
  - key: webinar-welcome
    name: Webinar welcome
    trigger: {type: event, event: webinar_registered}
    steps:
      - {id: welcome, type: send_email, template: webinar-welcome}
"""
SEGMENT = {"all": [{"event": "webinar_registered", "did": True, "within_days": 30}]}
QUEUES = ("events", "default", "delivery", "crm", "imports")


@pytest.fixture(autouse=True)
def empty_queues() -> Iterator[None]:
    get_connection().flushdb()
    yield
    get_connection().flushdb()


def run_background_work() -> None:
    """Run every queue until none has work left (jobs enqueue follow-up jobs on other queues)."""
    queues = [get_queue(name) for name in QUEUES]
    for _ in range(10):
        if not any(q.count for q in queues):
            return
        SimpleWorker(queues, connection=queues[0].connection).work(burst=True)
    raise AssertionError({q.name: q.count for q in queues})


def login_as(page: Any, username: str) -> None:
    page.context.clear_cookies()
    admin_login(page, username, f"pw-{username}")


def test_marketer_to_approver_to_events_to_sales_and_ops(page: Any, sender: Any, sink: Any) -> None:
    # given the four roles, and grades where 50 points make an MQL
    for name, role in (("marketer", roles.MARKETER), ("approver", roles.APPROVER), ("rep", roles.SALES),
                       ("ops", roles.OPS)):
        make_user(name, role)
    GradeBand.objects.create(grade="A", min_score=50, is_mql=True)
    GradeBand.objects.create(grade="B", min_score=10)

    # when the marketer imports the webinar leads from a CSV file
    login_as(page, "marketer")
    page.goto("/admin/contacts/importjob/")
    page.click("text=Import a CSV file")
    page.set_input_files("#id_file", files=[{"name": "leads.csv", "mimeType": "text/csv", "buffer": LEADS_CSV}])
    page.click("input[name=_upload]")
    page.wait_for_url(re.compile(r"/admin/contacts/importjob/\d+/mapping/$"))
    page.click("#import-start")
    page.wait_for_url(re.compile(r"/admin/contacts/importjob/\d+/change/$"))
    run_background_work()
    expect(page.locator("#import-status-label")).to_have_text("Completed")
    expect(page.locator("[data-count=created]")).to_have_text("3")
    assert sorted(Contact.objects.values_list("email", flat=True)) == [
        "ann@acme.example", "bob@globex.example", "dee@umbrella.example"]

    # and builds a segment of webinar registrants
    page.goto("/admin/contacts/segment/add/")
    page.fill("#id_name", "Webinar registrants")
    page.click("summary:has-text('Advanced: the definition as JSON')")  # the JSON path stays (issue 19)
    page.fill("#id_definition", json.dumps(SEGMENT))
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("Webinar registrants")
    segment = Segment.objects.get(name="Webinar registrants")

    # and writes a scoring rule: registering for the webinar is worth 60 points
    page.goto("/admin/scoring/scoringrule/add/")
    page.fill("#id_name", "Registered for the webinar")
    page.select_option("#id_kind", "behaviour")
    page.fill("#id_points", "60")
    page.fill("#id_event_type", "webinar_registered")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("Registered for the webinar")
    assert ScoringRule.objects.get(name="Registered for the webinar").points == 60

    # and imports the welcome workflow straight to staging; she may not promote it
    page.goto("/admin/automation/workflow/import/")
    page.fill("textarea[name=text]", WORKFLOW)
    page.select_option("select[name=to]", "staging")
    page.click("input[name=_import]")
    page.wait_for_selector("#workflow-versions")
    assert page.locator("input[name=promote]").count() == 0
    workflow = Workflow.objects.get(key="webinar-welcome")

    # when the approver promotes it to production
    login_as(page, "approver")
    page.goto(f"/admin/automation/workflow/{workflow.pk}/versions/")
    page.click("input[name=promote]")
    page.click("input[name=confirm-promote]")  # promoting asks first, showing what changes
    page.wait_for_selector("#workflow-versions")
    expect(page.locator("#production-column h3")).to_contain_text("v1")

    # and the webinar platform reports what the leads did
    _, raw = api_key_create(name="webinar-platform")
    response = Client().post("/api/v1/events", {"events": [
        {"email": "ann@acme.example", "type": "webinar_registered", "idempotency_key": "reg-ann"},
        {"email": "bob@globex.example", "type": "page_view", "properties": {"page": "/blog"},
         "idempotency_key": "view-bob"},
    ]}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 202, response.content
    run_background_work()

    # then Ann is scored, graded an MQL, in the segment, and got her welcome email
    ann = Contact.objects.get(email="ann@acme.example")
    assert (ann.score, ann.grade, ann.lifecycle_stage) == (60, "A", "mql")
    assert list(SegmentMembership.objects.filter(segment=segment).values_list("contact__email", flat=True)) == [
        "ann@acme.example"]
    assert [r.rcpt_tos for r in sink.received] == [["ann@acme.example"]]
    assert "See you at the webinar, Ann" in sink.received[0].header("Subject")
    assert Message.objects.get().status == MessageStatus.SENT

    # and sales sees Ann, the new MQL, at the top of the lead view
    login_as(page, "rep")
    page.goto("/leads/")
    first = page.locator("#lead-list tbody tr.lead-row").first
    expect(first).to_contain_text("ann@acme.example")
    expect(first.locator(".lead-score")).to_have_text("60")
    expect(first.locator(".lead-grade")).to_have_text("A")

    # and ops sees the send on the operations page, with nothing stuck or failed
    login_as(page, "ops")
    page.goto("/admin/operations/")
    expect(page.locator("#delivery-summary")).to_contain_text("Last hour: 1 sent, 0 failed")
    expect(page.locator("#delivery-summary")).to_contain_text("Nothing stuck.")
    expect(page.locator("#messages")).to_contain_text("sent")
    expect(page.locator("#incidents")).to_contain_text("None.")
