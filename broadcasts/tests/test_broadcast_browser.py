"""A marketer tests, approves and sends a broadcast in a real browser, and watches the progress bar
fill as a real worker delivers it to the SMTP sink; then pauses and resumes it."""

from __future__ import annotations

from typing import Any

import pytest

from broadcasts.models import Broadcast, BroadcastStatus
from broadcasts.tests.conftest import make_broadcast, make_contacts, work
from conftest import admin_login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_marketer_tests_approves_sends_and_watches_progress(page: Any, staged_sender: Any, tester: Any,
                                                              role_users: Any, sink: Any) -> None:
    contacts = make_contacts(5)
    broadcast = make_broadcast(staged_sender, contacts, key="spring")
    admin_login(page, "marketer", "pw-marketer")
    page.goto(f"/admin/broadcasts/broadcast/{broadcast.pk}/change/")

    page.click("button[value=test]")
    assert "Test sent: 1 message(s) to qa@leadflow.test" in page.locator(".messagelist").inner_text()
    page.click("button[value=approve]")
    assert "Approved for 5 contacts" in page.locator(".messagelist").inner_text()
    page.click("button[value=send]")
    assert "Sending to 5 contacts" in page.locator(".messagelist").inner_text()

    work()  # a real RQ worker in this process: the queue job, then delivery to the sink
    page.reload()
    assert "5 sent, 0 failed" in page.locator(".broadcast-counts").inner_text()
    assert page.locator(".broadcast-progress").get_attribute("aria-valuenow") == "5"
    assert sorted(r.rcpt_tos[0] for r in sink.received) == sorted(["qa@leadflow.test", *(c.email for c in contacts)])

    page.fill("#broadcast-reason", "checking the footer")
    page.click("button[value=pause]")
    assert "Paused" in page.locator(".messagelist").inner_text()
    page.click("button[value=resume]")
    assert "Resumed" in page.locator(".messagelist").inner_text()
    assert Broadcast.objects.get(pk=broadcast.pk).status == BroadcastStatus.QUEUED
