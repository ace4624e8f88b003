"""Issue 24's "done when", in a browser (Playwright + Debian chromium): an approver promotes a webinar
workflow whose estimate exceeds its sender's warm-up cap, sees the warning with the numbers beside
each limit and the expected delay, cannot confirm without acknowledging, acknowledges, and the
acknowledgement is in the audit log."""

from __future__ import annotations

from typing import Any

import pytest

from automation.models import VersionState
from automation.services import workflow_import
from automation.tests.test_capacity import limits, webinar_file  # noqa: F401  (limits is a fixture)
from conftest import admin_login
from core.models import AuditEntry


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_promote_dialog_shows_the_estimate_and_needs_the_acknowledgement(
        page: Any, role_users: Any, limits: Any) -> None:  # noqa: F811
    version = workflow_import(text=webinar_file(), actor="test", to="staging").versions[0]
    admin_login(page, "approver", "pw-approver")
    page.goto(f"/admin/automation/workflow/{version.workflow_id}/versions/")
    page.click("input[name=promote]")
    page.wait_for_selector("#capacity")

    warmup = page.locator('#capacity tr[data-limit="warm-up cap today"]')
    assert "500 today (0 sent, 500 left)" in warmup.inner_text()
    assert "1,200/day" in warmup.inner_text()
    assert "over" in warmup.inner_text()
    assert "700 wait for the next days' caps" in warmup.inner_text()
    rate = page.locator('#capacity tr[data-resource="sender:Webinars"][data-limit="rate"]')
    assert "50/s (180,000/h)" in rate.inner_text()
    assert "ok" in rate.inner_text()
    assert "unknown" in page.locator('#capacity tr[data-limit="daily API limit"]').inner_text()
    assert "emails from welcome, thanks will take up to 24 seconds at 50/s" in page.locator("#workflow-confirm") \
        .inner_text()
    assert "Webinars: warm-up cap today" in page.locator("#capacity-over").inner_text()

    # the confirm button does nothing until the box is ticked (required), then promotes
    page.click("input[name=confirm-promote]")
    assert page.locator("#capacity").is_visible()
    version.refresh_from_db()
    assert version.state == VersionState.STAGING
    page.check("#acknowledge-capacity")
    page.click("input[name=confirm-promote]")
    page.wait_for_selector("#workflow-versions")
    assert "Production v1" in page.locator("#production-column h3").inner_text()
    entry = AuditEntry.objects.get(action="workflow.capacity_acknowledged")
    assert entry.actor_label == "approver"
    assert entry.data["over"] == ["Webinars: warm-up cap today"]
