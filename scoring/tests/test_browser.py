"""In a real browser, as sales: the ranked leads, then one lead's score broken down by rule."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from conftest import admin_login, make_user
from core import roles
from core.testing.artifacts import screenshot_path
from scoring.services import score_events
from scoring.tests.factories import bands, behaviour_rule, contact, event

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sales_sees_the_top_lead_and_its_score_breakdown(page: Any) -> None:
    make_user("rep", roles.SALES)
    bands()
    behaviour_rule("Pricing visits", points=10)
    behaviour_rule("Demo request", "demo_request", points=50, repeatable=False)
    top, other = contact(email="top@acme.example", company="Acme"), contact(email="low@globex.example")
    now = timezone.now()
    score_events(events=[event(top, "demo_request", at=now), event(top, at=now), event(top, at=now),
                         event(other, at=now)], now=now)

    admin_login(page, "rep", "pw-rep")
    page.goto("/leads/")
    first = page.locator("#lead-list tbody tr.lead-row").first
    assert "top@acme.example" in first.inner_text()
    assert first.locator(".lead-score").inner_text() == "70"
    assert first.locator(".lead-grade").inner_text() == "A"
    first.locator("a.lead-link").click()
    page.wait_for_url(f"**/leads/{top.pk}/")
    assert page.locator("#lead-score").inner_text() == "70"
    rows = page.locator("#score-breakdown tbody tr.breakdown-row")
    assert rows.count() == 2
    assert rows.nth(0).locator(".rule-name").inner_text() == "Demo request"
    assert rows.nth(0).locator(".rule-effective").inner_text() == "50.0"
    assert rows.nth(1).locator(".rule-name").inner_text() == "Pricing visits"
    assert "2" in rows.nth(1).inner_text()
    assert page.locator("#breakdown-total").inner_text() == "70.0"
    page.screenshot(path=screenshot_path("sales-lead-detail"))
