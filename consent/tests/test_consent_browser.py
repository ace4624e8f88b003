"""Issue 20's done-when, in a real browser: a visitor submits a signup form, confirms the email
that reached the SMTP sink, leaves a topic in the preference center, and the next run of a
workflow sends only the topic they kept."""

from __future__ import annotations

import email
import re
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from django.test import Client

from automation.tests.conftest import advance, deploy, emit, wf_file
from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus
from campaigns.tests.conftest import make_template
from consent.models import SignupForm, Topic
from contacts.models import ConsentStatus, Contact

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def _html(received: Any) -> str:
    parsed = email.message_from_bytes(received.data, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def test_signup_confirm_choose_topics_and_the_workflow_sends_only_the_chosen_topic(page: Any, sender: Any,
                                                                                  sink: Any) -> None:
    product = Topic.objects.create(key="product", name="Product news")
    events = Topic.objects.create(key="events", name="Events")
    make_template("product-news", topic=product, subject="Product news")
    make_template("event-news", topic=events, subject="Events")
    signup = SignupForm.objects.create(slug="newsletter", name="Newsletter", fields=["first_name"],
                                       success_message="Thanks for signing up!")
    signup.topics.add(product, events)
    deploy(wf_file("digest", trigger={"type": "event", "event": "digest_due"}, reentry="always", steps=[
        {"id": "product", "type": "send_email", "template": "product-news"},
        {"id": "events", "type": "send_email", "template": "event-news"}]))

    # Given a visitor who signs up on the public form
    page.goto("/f/newsletter/")
    page.fill("#id_email", "Ada@Example.com")
    page.fill("#id_first_name", "Ada")
    page.click("#signup-form button[type=submit]")
    assert "Thanks for signing up!" in page.locator("#signup-done").inner_text()
    ada = Contact.objects.get(email="ada@example.com")
    assert ada.consent_status == ConsentStatus.UNKNOWN  # not before the confirmation

    # When they follow the confirmation email's link (it reached the sink through the outbox)
    delivery_run_batch(sender=sender)
    [confirmation] = sink.received
    link = re.search(r'href="([^"]+)"[^>]*>Confirm my subscription', _html(confirmation))
    assert link
    # The click redirect leads to SITE_URL's host; the browser follows it on the live server.
    redirect = Client().get(_path(link.group(1)))
    assert redirect.status_code == 302
    page.goto(_path(redirect["Location"]))
    page.click("#confirm-button")
    assert "confirmed" in page.locator("#confirm-done").inner_text()
    ada.refresh_from_db()
    assert ada.consent_status == ConsentStatus.GRANTED

    # Then the workflow sends both topics
    emit(ada, "digest_due")
    advance()
    delivery_run_batch(sender=sender)
    assert sorted(Message.objects.filter(template__key__in=["product-news", "event-news"], status="sent")
                  .values_list("template__key", flat=True)) == ["event-news", "product-news"]

    # When they leave "Product news" in the preference center (the link in the email)
    product_mail = Message.objects.get(template__key="product-news")
    page.goto(_path(tracking.unsubscribe_url(product_mail.pk)))
    page.uncheck("input[name=topic][value=product]")
    page.click("#save-preferences")
    assert page.locator("#prefs-saved").is_visible()
    assert not page.locator("input[name=topic][value=product]").is_checked()
    assert page.locator("input[name=topic][value=events]").is_checked()

    # Then the next run sends only the events topic; the product email is suppressed, with its reason
    before = len(sink.received)
    emit(ada, "digest_due")
    advance()
    delivery_run_batch(sender=sender)
    second = Message.objects.filter(template__key__in=["product-news", "event-news"]).order_by("-id")[:2]
    assert {m.template.key if m.template else "": (m.status, m.reason) for m in second} == {
        "product-news": (MessageStatus.SUPPRESSED, "topic_unsubscribed"), "event-news": (MessageStatus.SENT, "")}
    assert len(sink.received) == before + 1
    assert "Events" in str(sink.received[-1].data)
