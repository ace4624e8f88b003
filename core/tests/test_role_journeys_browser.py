"""In a real browser (issue 19): each role starts at the login page and reaches its tasks by
clicking only; a screenshot of each main screen is kept as a test artifact (core/testing/artifacts.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from campaigns.models import Message, SenderProfile
from conftest import admin_login, make_user
from contacts.models import Contact
from core import roles
from core.testing.artifacts import screenshot_path
from core.testing.scores import score_set

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page: Any, name: str) -> None:
    page.screenshot(path=screenshot_path(name), full_page=True)


def test_sales_lands_on_the_leads_and_opens_one_of_theirs(page: Any) -> None:
    rep = make_user("rep", roles.SALES)
    mine = Contact.objects.create(email="mine@acme.example", company="Acme", owner=rep)
    score_set(mine, 40)
    score_set(Contact.objects.create(email="other@globex.example"), 90)

    admin_login(page, "rep", "pw-rep")
    page.wait_for_url("**/leads/")
    shot(page, "sales-home-leads")
    page.click("#role-nav a[data-page=my-leads]")
    rows = page.locator("#lead-list tbody tr.lead-row")
    assert rows.count() == 1
    rows.first.locator("a.lead-link").click()
    page.wait_for_url(f"**/leads/{mine.pk}/")
    assert page.locator("#lead-owner").inner_text() == "rep"
    shot(page, "sales-lead-detail")
    assert page.locator("#role-nav a[data-page=operations]").count() == 0  # not theirs


def test_ops_lands_on_operations_and_follows_a_failed_message_to_the_email(page: Any) -> None:
    make_user("olga", roles.OPS)
    sender = SenderProfile.objects.create(name="Main", from_email="news@leadflow.test", email_url="smtp://127.0.0.1:1")
    contact = Contact.objects.create(email="ann@acme.example")
    Message.objects.create(contact=contact, sender=sender, idempotency_key="m1", subject="Welcome", status="failed",
                           reason="rejected", html="<h1 id='hello'>Hello Ann</h1>", sent_at=timezone.now())

    admin_login(page, "olga", "pw-olga")
    page.wait_for_url("**/admin/operations/")
    shot(page, "ops-home-operations")
    page.click("#role-nav a[data-page=queues]")
    page.wait_for_url("**/admin/rq/")
    shot(page, "ops-queues")
    page.click("#role-nav a[data-page=outbox]")
    page.click("#result_list tbody tr th a")
    frame = page.frame_locator("#message-html")
    assert frame.locator("#hello").inner_text() == "Hello Ann"  # the email, rendered, not its HTML source
    shot(page, "ops-message")


def test_a_marketer_imports_and_gives_leads_an_owner_from_the_contact_list(page: Any) -> None:
    make_user("mia", roles.MARKETER)
    rep = make_user("rep", roles.SALES)
    ann = Contact.objects.create(email="ann@acme.example", first_name="Ann")

    admin_login(page, "mia", "pw-mia")
    assert page.locator("#dashboard").is_visible()
    page.click("#role-nav a[data-page=import]")
    page.wait_for_url("**/admin/contacts/importjob/add/")
    shot(page, "marketer-import")
    page.click("#role-nav a[data-page=contacts]")
    page.check(f"input[name=_selected_action][value='{ann.pk}']")
    page.select_option("select[name=action]", "assign_owner")
    page.click("button[name=index]")
    page.select_option("#id_owner", str(rep.pk))
    page.click("#assign-owner button[type=submit]")
    page.wait_for_url("**/admin/contacts/contact/")
    assert Contact.objects.get(pk=ann.pk).owner_id == rep.pk
    page.click("#result_list a:text('ann@acme.example')")
    assert page.locator("#contact-owner").inner_text() == "rep"
    shot(page, "marketer-contact-page")
