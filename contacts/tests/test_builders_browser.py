"""In a real browser (issue 19): a new marketer starts from the login page, clicks through the
navigation, builds a segment and a scoring rule without typing JSON, and sees the live count.
Screenshots of each main screen are kept as test artifacts (core/testing/artifacts.py)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from conftest import admin_login, make_user
from contacts.models import Contact, Event, Segment, Tag
from core import roles
from core.testing.artifacts import screenshot_path
from scoring.models import ScoringRule

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page: Any, name: str) -> None:
    page.screenshot(path=screenshot_path(name), full_page=True)


# The builders answer each click from the server (htmx): a click's request, its swap and the live
# count it sets off are done before the next click looks for the redrawn controls.
COUNT_SWAPS = "window.__swaps = 0; document.addEventListener('htmx:afterSettle', () => { window.__swaps += 1; });"


def settled(page: Any, act: Callable[[], Any]) -> None:
    before = page.evaluate("window.__swaps")
    act()
    page.wait_for_function(f"window.__swaps > {before} && !document.querySelector('.htmx-request')")


def count_is(page: Any, text: str) -> None:
    page.wait_for_function(f"document.getElementById('segment-preview-count').textContent === {text!r}")


def test_a_marketer_builds_a_segment_and_a_scoring_rule_by_clicking(page: Any) -> None:
    make_user("mia", roles.MARKETER)
    ann = Contact.objects.create(email="ann@acme.example", country="DE")
    Contact.objects.create(email="bob@globex.example", country="US")
    Event.objects.create(contact=ann, event_type="page_view", properties={"path": "/pricing"},
                         occurred_at=timezone.now(), source="test")
    page.add_init_script(COUNT_SWAPS)

    admin_login(page, "mia", "pw-mia")
    shot(page, "marketer-home")
    page.click("#role-nav a[data-page=segments]")
    page.click("a.addlink")  # "Add segment"
    page.fill("#id_name", "German pricing visitors")

    builder = page.locator("#fb-definition")
    settled(page, lambda: builder.locator("select.fb-add").first.select_option("field"))
    condition = builder.locator(".fb-condition").nth(0)
    settled(page, lambda: condition.locator("select.fb-field").select_option("country"))
    settled(page, lambda: condition.locator("select.fb-op").select_option("eq"))
    condition.locator("input.fb-value").fill("de")
    settled(page, lambda: condition.locator("input.fb-value").press("Tab"))

    settled(page, lambda: builder.locator("select.fb-add").first.select_option("event"))
    event = builder.locator(".fb-condition").nth(1)
    settled(page, lambda: event.locator("select.fb-event").select_option("page_view"))
    event.locator("input.fb-days").fill("30")
    settled(page, lambda: event.locator("input.fb-days").press("Tab"))
    settled(page, lambda: event.locator("select.fb-add-property").select_option("path"))
    event.locator("input.fb-property-value").fill("/pricing")
    settled(page, lambda: event.locator("input.fb-property-value").press("Tab"))

    count_is(page, "1 contact matches")
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
    # A known event type is chosen from the list; its seen properties are then offered.
    settled(page, lambda: page.select_option("select.fb-pick-event", "page_view"))
    assert page.input_value("#id_event_type") == "page_view"
    settled(page, lambda: page.locator("#fb-property_filters select.fb-add-property").select_option("path"))
    page.locator("#fb-property_filters input.fb-property-value").fill("/pricing")
    settled(page, lambda: page.locator("#fb-property_filters input.fb-property-value").press("Tab"))
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


def test_a_marketer_builds_a_nested_segment_by_clicking_and_watches_the_count(page: Any) -> None:
    """All of: (any of: 3+ pricing views in 30 days, or the webinar tag) and not (a customer)."""
    make_user("mia", roles.MARKETER)
    now = timezone.now()
    webinar, customer = Tag.objects.create(name="webinar"), Tag.objects.create(name="customer")
    ann, bob, cy, dee = (Contact.objects.create(email=f"{name}@example.com") for name in ("ann", "bob", "cy", "dee"))
    bob.tags.add(webinar)
    cy.tags.add(customer)
    for who, views, days_ago in ((ann, 3, 1), (bob, 1, 1), (cy, 3, 2), (dee, 3, 60)):
        for n in range(views):
            Event.objects.create(contact=who, event_type="page_view", properties={"path": "/pricing"},
                                 occurred_at=now - dt.timedelta(days=days_ago, minutes=n), source="test")
    page.add_init_script(COUNT_SWAPS)
    admin_login(page, "mia", "pw-mia")
    page.click("#role-nav a[data-page=segments]")
    page.click("a.addlink")
    page.fill("#id_name", "Hot, not customers")
    count_is(page, "4 contacts match")  # an empty "all of" is everyone

    root = "#fb-definition > .fb-group"
    settled(page, lambda: page.select_option(f"{root} > .fb-foot select.fb-add", "any"))
    count_is(page, "0 contacts match")  # an empty "any of" is no one
    group = f"{root} > ul > li > .fb-group"
    settled(page, lambda: page.select_option(f"{group} > .fb-foot select.fb-add", "event"))
    event = page.locator(f"{group} .fb-event")
    settled(page, lambda: event.locator("select.fb-event").select_option("page_view"))
    count_is(page, "4 contacts match")
    event.locator("input.fb-count").fill("3")
    settled(page, lambda: event.locator("input.fb-count").press("Tab"))
    count_is(page, "3 contacts match")
    event.locator("input.fb-days").fill("30")
    settled(page, lambda: event.locator("input.fb-days").press("Tab"))
    count_is(page, "2 contacts match")  # dee's views are older
    settled(page, lambda: event.locator("select.fb-add-property").select_option("path"))
    event.locator("input.fb-property-value").fill("/pricing")
    settled(page, lambda: event.locator("input.fb-property-value").press("Tab"))
    settled(page, lambda: page.select_option(f"{group} > .fb-foot select.fb-add", "tag"))
    settled(page, lambda: page.select_option(f"{group} .fb-tag select.fb-name", "webinar"))
    count_is(page, "3 contacts match")  # bob, by his tag
    settled(page, lambda: page.select_option(f"{root} > .fb-foot select.fb-add", "not"))
    settled(page, lambda: page.select_option(".fb-not .fb-group > .fb-foot select.fb-add", "tag"))
    settled(page, lambda: page.select_option(".fb-not .fb-tag select.fb-name", "customer"))
    count_is(page, "2 contacts match")  # not cy, a customer
    assert page.locator("#segment-preview-sample td").all_text_contents()[::3] == ["bob@example.com", "ann@example.com"]
    shot(page, "marketer-segment-builder-nested")

    page.click("input[name=_save]")
    page.wait_for_url("**/admin/contacts/segment/")
    segment = Segment.objects.get(name="Hot, not customers")
    assert segment.definition == {"all": [
        {"any": [
            {"event": "page_view", "did": True, "min_count": 3, "within_days": 30, "properties": {"path": "/pricing"}},
            {"tag": "webinar"},
        ]},
        {"not": {"all": [{"tag": "customer"}]}},
    ]}

    # The JSON stays as the advanced view: typed there, the builder and the count follow it.
    page.goto(f"/admin/contacts/segment/{segment.pk}/change/")
    count_is(page, "2 contacts match")
    page.click("summary:has-text('Advanced: the definition as JSON')")
    page.fill("#id_definition", json.dumps({"any": [{"tag": "webinar"}]}))
    count_is(page, "1 contact matches")
    page.wait_for_function("document.querySelectorAll('#fb-definition .fb-condition').length === 1")
    assert page.locator("#fb-definition > .fb-group > .fb-head select.fb-mode").input_value() == "any"
    assert page.locator("#fb-definition .fb-tag select.fb-name").input_value() == "webinar"
