"""In a real browser at 1400 px (issue 19): the wide admin tables (contacts, outbox, enrollments,
API keys) show every column without a sideways scroll, next to the role navigation bar."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from automation.models import Enrollment, Workflow, WorkflowVersion
from campaigns.models import Message, SenderProfile
from conftest import admin_login
from contacts.apikeys import api_key_create
from contacts.models import ApiScope, Contact
from core.testing.artifacts import screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]



def _rows() -> None:
    contact = Contact.objects.create(email="a.very.long.address.for.testing.widths@subsidiary.example-enterprise.com",
                                     first_name="Maximiliana", last_name="Wolfeschlegelsteinhausen",
                                     company="International Business Machines Corporation", job_title="VP")
    sender = SenderProfile.objects.create(name="Main", from_email="news@leadflow.test", email_url="smtp://127.0.0.1:1")
    Message.objects.create(contact=contact, sender=sender, idempotency_key="k" * 60, subject="Hello there " * 8,
                           reason="", status="failed")
    api_key_create(name="website-signup-form-production", scopes=ApiScope.values)
    workflow = Workflow.objects.create(key="webinar-follow-up-for-enterprise-accounts", name="Webinar follow-up")
    version = WorkflowVersion.objects.create(workflow=workflow, number=1, definition={"steps": []},
                                             state="production")
    Enrollment.objects.create(contact=contact, workflow=workflow, version=version, step_id="wait-three-days-then-send",
                              entered_at=timezone.now(), next_run_at=timezone.now())


@pytest.mark.parametrize("path", ["/admin/contacts/contact/", "/admin/campaigns/message/",
                                  "/admin/automation/enrollment/", "/admin/contacts/apikey/"])
def test_wide_tables_are_not_cut_off_at_1400px(page: Any, role_users: dict[str, Any], path: str) -> None:
    _rows()
    page.set_viewport_size({"width": 1400, "height": 900})
    admin_login(page, "admin", "pw-admin")
    page.goto(path)
    table = page.locator("#result_list")
    table.wait_for()
    # Every column is on screen without scrolling sideways: the page does not clip the table and
    # its box does not hide the first or last columns behind a scroll bar.
    results = page.locator("#changelist .results")
    widths = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert widths[0] <= widths[1] + 1, f"{path}: table {widths[0]} px wide in a {widths[1]} px box"
    box = page.locator("#result_list").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 1400, f"{path}: table ends at {box['x'] + box['width']}"
    page.screenshot(path=screenshot_path(f"wide-{path.strip('/').replace('/', '-')}"))


def test_the_marketer_dashboards_column_headers_stay_on_one_line(page: Any, role_users: dict[str, Any]) -> None:
    # Django's dashboard.css gives every th of a dashboard module width: 100%, which squeezed the
    # other headers of the home page's tables to one letter per line.
    page.set_viewport_size({"width": 1280, "height": 900})
    admin_login(page, "admin", "pw-admin")
    page.goto("/admin/")
    headers = page.locator(".leadflow-dashboard thead th")
    headers.first.wait_for()
    for text, height, line in headers.evaluate_all(
            "els => els.map(e => [e.innerText, e.getBoundingClientRect().height,"
            " parseFloat(getComputedStyle(e).lineHeight) || 16])"):
        assert height < 2 * line + 12, f"header {text!r} is {height} px tall: wrapped"
