"""Workflow emails (issue 21 item 4): a send_email step's `utm` option tags its links, and each
version x step has a report page (chart, links, CSV) for Marketers, Approvers and Ops."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from automation.definition import validate_workflow
from automation.models import Workflow
from automation.tests.conftest import advance, deploy, emit, make_contact, version, wf_file
from automation.utm import step_utm_cache_clear
from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_utm_cache() -> Iterator[None]:
    # The step-option cache outlives a test's rolled-back rows (SQLite reuses their ids).
    step_utm_cache_clear()
    yield
    step_utm_cache_clear()


LINKS = '<p><a href="https://example.com/pricing">Pricing</a> <a href="https://example.com/demo?utm_medium=x">Demo</a></p>'


def workflow_file(utm: Any = None) -> str:
    step: dict[str, Any] = {"id": "hello", "type": "send_email", "template": "hello"}
    if utm is not None:
        step["utm"] = utm
    data = yaml.safe_load(wf_file("onboard", steps=[step], templates=["hello"]))
    data["templates"][0]["html"] = LINKS
    return yaml.safe_dump(data, sort_keys=False)


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def sent_message(sender: Any, utm: Any = None) -> Message:
    deploy(workflow_file(utm))
    emit(make_contact("ada@example.com", first_name="Ada"), "signed_up")
    advance()
    delivery_run_batch(sender=sender)
    return Message.objects.get(source="workflow:onboard")


def test_a_send_email_steps_utm_tags_its_links(sender: Any, sink: Any):
    message = sent_message(sender, {"utm_source": "leadflow", "utm_medium": "email", "utm_campaign": "onboard"})
    assert message.links == [
        "https://example.com/pricing?utm_source=leadflow&utm_medium=email&utm_campaign=onboard",
        "https://example.com/demo?utm_medium=x&utm_source=leadflow&utm_campaign=onboard"]
    response = Client().get(path_of(tracking.click_url(message.pk, 0)))
    assert response["Location"] == message.links[0]


def test_a_step_without_utm_leaves_links_alone(sender: Any, sink: Any):
    assert sent_message(sender).links == ["https://example.com/pricing", "https://example.com/demo?utm_medium=x"]


def test_a_bad_utm_option_is_a_validation_error_naming_the_step():
    issues = [str(i) for i in validate_workflow(_definition({"utm_campaing": "x"}), known_templates={"hello"})]
    assert any("step 'hello'" in i and "unknown parameter 'utm_campaing'" in i for i in issues), issues


def _definition(utm: Any) -> dict[str, Any]:
    return {"key": "onboard", "name": "Onboard", "trigger": {"type": "event", "event": "signed_up"},
            "steps": [{"id": "hello", "type": "send_email", "template": "hello", "utm": utm}]}


def test_the_email_report_page_shows_counts_chart_links_and_exports_csv(sender: Any, sink: Any,
                                                                        role_users: dict[str, User]):
    message = sent_message(sender)
    client = Client()
    client.get(path_of(tracking.open_url(message.pk)))
    client.get(path_of(tracking.click_url(message.pk, 1)))
    production = version(message_workflow(), "production")
    marketer = Client()
    marketer.force_login(role_users["marketer"])

    listing = marketer.get(reverse("admin:automation_workflow_emails", args=[production.workflow_id]))
    report_url = reverse("admin:automation_workflow_email_report",
                         args=[production.workflow_id, production.pk, "hello"])
    assert report_url in listing.content.decode()
    page = marketer.get(report_url)
    html = page.content.decode()
    assert page.status_code == 200
    assert '<svg class="report-chart"' in html
    assert "https://example.com/demo?utm_medium=x" in html
    totals = page.context["report"]
    assert (totals.sent, totals.opened_unique, totals.clicked_total) == (1, 1, 1)

    export = marketer.get(reverse("admin:automation_workflow_email_report_csv",
                                  args=[production.workflow_id, production.pk, "hello"]) + "?bucket=hour")
    assert export["Content-Type"].startswith("text/csv")
    body = b"".join(export.streaming_content).decode()  # type: ignore[attr-defined]
    rows = list(csv.reader(io.StringIO(body)))
    assert ["Clicks (total)", "1", "1.0000"] in rows
    assert rows[-2][0] == "hour"

    assert marketer.get(report_url + "?bucket=week").content.decode() == \
        "bucket: expected one of hour, day, got 'week'"
    assert marketer.get(reverse("admin:automation_workflow_email_report",
                                args=[production.workflow_id, production.pk, "nope"])).status_code == 404


def message_workflow() -> Workflow:
    return Workflow.objects.get(key="onboard")


@pytest.mark.parametrize(("role", "allowed"), [("marketer", True), ("approver", True), ("ops", True),
                                               ("sales", False), ("outsider", False)])
def test_who_may_see_email_reports(sender: Any, role_users: dict[str, User], role: str, allowed: bool):
    workflow = deploy(workflow_file())
    production = version(workflow, "production")
    client = Client()
    client.force_login(role_users[role])
    for url in (reverse("admin:automation_workflow_emails", args=[workflow.pk]),
                reverse("admin:automation_workflow_email_report", args=[workflow.pk, production.pk, "hello"]),
                reverse("admin:automation_workflow_email_report_csv", args=[workflow.pk, production.pk, "hello"])):
        assert (client.get(url).status_code == 200) is allowed, url
