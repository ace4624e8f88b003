"""In a real browser (issue 19): a new marketer starts from the login page, clicks through the
navigation, builds a segment and a scoring rule without typing JSON, and sees the live count.
Screenshots of each main screen are kept as test artifacts (core/testing/artifacts.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from conftest import admin_login, make_user
from contacts.models import Contact, Event, Segment
from core import roles
from core.testing.artifacts import screenshot_path
from scoring.models import ScoringRule

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page: Any, name: str) -> None:
    page.screenshot(path=screenshot_path(name), full_page=True)


def test_a_marketer_builds_a_segment_and_a_scoring_rule_by_clicking(page: Any) -> None:
    make_user("mia", roles.MARKETER)
    ann = Contact.objects.create(email="ann@acme.example", country="DE")
    Contact.objects.create(email="bob@globex.example", country="US")
    Event.objects.create(contact=ann, event_type="page_view", properties={"path": "/pricing"},
                         occurred_at=timezone.now(), source="test")

    admin_login(page, "mia", "pw-mia")
    shot(page, "marketer-home")
    page.click("#role-nav a[data-page=segments]")
    page.click("a.addlink")  # "Add segment"
    page.fill("#id_name", "German pricing visitors")

    builder = page.locator("#segment-builder .filter-builder")
    builder.locator("select.fb-add").first.select_option("field")
    condition = builder.locator(".fb-condition").nth(0)
    condition.locator("select.fb-field").select_option("country")
    condition.locator("select.fb-op").select_option("eq")
    condition.locator("input.fb-value").fill("de")
    condition.locator("input.fb-value").press("Tab")

    builder.locator("select.fb-add").first.select_option("event")
    event = builder.locator(".fb-condition").nth(1)
    event.locator("select.fb-event").select_option("page_view")
    event.locator("input.fb-days").fill("30")
    event.locator("input.fb-days").press("Tab")
    event = builder.locator(".fb-condition").nth(1)
    event.locator("select.fb-add-property").select_option("path")
    event = builder.locator(".fb-condition").nth(1)
    event.locator("input.fb-property-value").fill("/pricing")
    event.locator("input.fb-property-value").press("Tab")

    page.wait_for_function("document.getElementById('segment-preview-count').textContent.includes('1 contact matches')")
    shot(page, "marketer-segment-builder")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/contacts/segment/")
    segment = Segment.objects.get(name="German pricing visitors")
    assert segment.definition == {"all": [
        {"field": "country", "op": "eq", "value": "de"},
        {"event": "page_view", "did": True, "min_count": 1, "within_days": 30, "properties": {"path": "/pricing"}},
    ]}

    page.click("#role-nav a[data-page=scoring]")
    page.click("a.addlink")  # "Add scoring rule"
    page.fill("#id_name", "Visited pricing")
    page.select_option("#id_kind", "behaviour")
    assert page.locator("fieldset.rule-kind-fit").is_hidden()  # only the chosen kind's section
    assert page.locator("fieldset.rule-kind-behaviour").is_visible()
    page.fill("#id_points", "15")
    page.fill("#id_event_type", "page_view")
    page.locator("#id_event_type").press("Tab")
    page.locator("#property-filter-builder select.fb-add-property").select_option("path")
    page.locator("#property-filter-builder input.fb-property-value").fill("/pricing")
    page.locator("#property-filter-builder input.fb-property-value").press("Tab")
    shot(page, "marketer-scoring-rule-builder")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/scoring/scoringrule/")
    rule = ScoringRule.objects.get(name="Visited pricing")
    assert (rule.event_type, rule.property_filters, rule.points) == ("page_view", {"path": "/pricing"}, 15)

    # A fit rule: only the other section, with the segment builder for its conditions.
    page.click("#role-nav a[data-page=scoring]")
    page.click("a.addlink")
    page.select_option("#id_kind", "fit")
    assert page.locator("fieldset.rule-kind-behaviour").is_hidden()
    assert page.locator("fieldset.rule-kind-fit .filter-builder").is_visible()
