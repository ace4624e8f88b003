"""Issue 15's whole story in a browser (Playwright + Debian chromium): a marketer edits a draft and
its email in the admin, stages, simulates and cannot promote; an approver sees the content diff and
promotes; a real contact receives the new content (real delivery to the SMTP sink); a second staged
change is never seen by real contacts; a rollback restores the earlier content."""

from __future__ import annotations

from typing import Any

import pytest

from automation.models import Workflow
from automation.tests.conftest import advance, deploy, emit, make_contact
from automation.tests.test_content_versions import OLD, pricing_file
from campaigns.delivery import delivery_run_batch
from conftest import admin_login


def received(sink: Any, sender: Any, email: str, *, test: bool = False, **fields: Any) -> list[str]:
    """A contact views the pricing page; the real pipeline, step runner and delivery batch run
    in-process; the subjects the sink got for them (a test contact's go to the staging recipient)."""
    before = len(sink.received)
    emit(make_contact(email, first_name="Ada", is_test=test, **fields), "pricing_viewed")
    advance()
    delivery_run_batch(sender=sender)
    return [r.header("Subject") for r in sink.received[before:]]


def edit_as_marketer(page: Any, workflow: Workflow, *, from_version: int, subject: str) -> None:
    page.goto(f"/admin/automation/workflow/{workflow.pk}/versions/")
    page.click(f"#edit-v{from_version}")
    page.click("input[name=new_draft]")  # editing a version that ran makes a new draft
    page.wait_for_selector("#workflow-editor")
    number = from_version + 1
    assert f"v{number} is Draft" in page.locator("#workflow-editor").inner_text()
    # the email, through the draft: a new revision pinned by this draft only
    page.fill("#template-pricing-followup input[name=t-subject]", subject)
    page.click("#template-pricing-followup input[name=save-template]")
    page.wait_for_selector("#workflow-editor")
    assert f"pins pricing-followup r{number}" in page.locator("#template-pricing-followup h3").inner_text()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_marketer_edits_approver_promotes_real_contacts_get_only_promoted_content(
        page, role_users, sender, sink) -> None:
    workflow = deploy(pricing_file(OLD))  # v1 in production: "Our pricing, Ada"
    assert received(sink, sender, "first@example.com") == ["Our pricing, Ada"]
    make_contact("qa@example.com", first_name="Q", is_test=True)

    # marketer: a draft of v1, its email and a new step edited in forms, staged, simulated
    admin_login(page, "marketer", "pw-marketer")
    edit_as_marketer(page, workflow, from_version=1, subject="New pricing, {{ contact.first_name }}")
    page.select_option("#add-type", "adjust_score")
    page.click("#add-step")
    page.wait_for_selector("#step-1")
    assert "adjust_score needs non-zero whole `points`" in page.locator("#step-1 .step-errors").inner_text()
    page.fill("input[name=step-1-id]", "bump")
    page.fill("input[name=step-1-f-points]", "5")
    page.click("#save-steps")
    page.wait_for_selector("#workflow-editor")
    assert "It validates." in page.locator("#editor-validation").inner_text()
    assert "bump" in page.locator("#editor-graph").inner_text()  # the graph follows the edit
    page.click("input[name=stage-2]")
    page.wait_for_selector("#workflow-versions")
    assert "Staging v2" in page.locator("#staging-column h3").inner_text()
    page.fill("input[name=contacts]", "qa@example.com")
    page.select_option("#simulate-form select[name=simulate]", label="v2 (staging)")
    page.click("#simulate-form input[type=submit]")
    page.wait_for_selector("#simulation")
    assert "bump" in page.locator("#simulation").inner_text()
    assert page.locator("#promote-denied").is_visible()
    assert page.locator("input[name=promote]").count() == 0
    assert received(sink, sender, "second@example.com") == ["Our pricing, Ada"]  # staged: not for real contacts

    # approver: sees what customers would receive differently, confirms, promotes
    page.context.clear_cookies()
    admin_login(page, "approver", "pw-approver")
    page.goto(f"/admin/automation/workflow/{workflow.pk}/versions/")
    row = page.locator('#template-diff tr[data-template="pricing-followup"]')
    assert "changed" in row.inner_text()
    assert "New pricing, {{ contact.first_name }}" in row.inner_text()
    page.click("input[name=promote]")
    page.click("input[name=confirm-promote]")
    page.wait_for_selector("#workflow-versions")
    assert "Production v2" in page.locator("#production-column h3").inner_text()
    assert received(sink, sender, "third@example.com") == ["New pricing, Ada"]

    # marketer: a second change, staged; test contacts see it, real contacts never do
    page.context.clear_cookies()
    admin_login(page, "marketer", "pw-marketer")
    edit_as_marketer(page, workflow, from_version=2, subject="V3 DRAFT SUBJECT - do not send")
    page.click("input[name=stage-3]")
    page.wait_for_selector("#workflow-versions")
    assert received(sink, sender, "fourth@example.com") == ["New pricing, Ada"]
    assert received(sink, sender, "qa2@example.com", test=True) == ["[STAGING] V3 DRAFT SUBJECT - do not send"]

    # approver: rolls back; real contacts get the earlier content again
    page.context.clear_cookies()
    admin_login(page, "approver", "pw-approver")
    page.goto(f"/admin/automation/workflow/{workflow.pk}/versions/")
    assert "back to pricing-followup r1" in page.locator("#rollback-label").inner_text()
    page.click("input[name=rollback]")
    page.click("input[name=confirm-rollback]")
    page.wait_for_selector("#workflow-versions")
    assert "Production v1" in page.locator("#production-column h3").inner_text()
    assert received(sink, sender, "fifth@example.com") == ["Our pricing, Ada"]
    assert dict(workflow.versions.values_list("number", "state")) == {1: "production", 2: "archived", 3: "staging"}
