"""Open pixel, click redirect, unsubscribe and the bounce webhook: signed, bounded, evented."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus, Suppression, SuppressionReason
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact
from contacts.apikeys import api_key_create
from contacts.models import ConsentStatus, Contact, Event
from core.testing.sns import fake_sns_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(sender, template, sink) -> Message:  # noqa: ANN001
    contact = make_contact("reader@example.com")
    messages_queue(template=template, items=[QueueItem(contact.pk, "welcome:1")])
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    assert message.status == MessageStatus.SENT
    return message


def path_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


def test_the_open_pixel_records_the_first_open_as_one_event(client: Client, sent: Message):
    url = path_of(tracking.open_url(sent.pk))
    assert f'src="{tracking.open_url(sent.pk)}"' in sent.html
    for _ in range(3):
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/gif"
    sent.refresh_from_db()
    assert sent.opened_at is not None
    assert list(Event.objects.values_list("event_type", "properties__message_id")) == [("email_opened", sent.pk)]


def test_a_click_redirects_only_to_the_link_that_was_in_the_message(client: Client, sent: Message):
    response = client.get(path_of(tracking.click_url(sent.pk, 0)))
    assert response.status_code == 302
    assert response["Location"] == "https://example.com/webinar"
    assert set(Event.objects.values_list("event_type", flat=True)) == {"email_clicked", "email_opened"}
    clicked = Event.objects.get(event_type="email_clicked")
    assert clicked.properties["url"] == "https://example.com/webinar"
    # a signed token for a link index the message does not have leads nowhere
    assert client.get(path_of(tracking.click_url(sent.pk, 5))).status_code == 404


@pytest.mark.parametrize("forge", ["altered", "unsigned", "other_purpose", "wrong_salt"])
def test_forged_or_altered_tokens_are_rejected(client: Client, sent: Message, forge: str):
    good = tracking.click_url(sent.pk, 0).rsplit("/", 1)[1]
    token = {
        "altered": good.replace(f"{sent.pk}.0", f"{sent.pk}.1"),
        "unsigned": f"{sent.pk}.0",
        "other_purpose": tracking.open_url(sent.pk).rsplit("/", 1)[1].removesuffix(".gif"),
        "wrong_salt": signing.Signer(salt="wrong").sign(f"{sent.pk}.0"),
    }[forge]
    response = client.get(reverse("campaigns:click", args=[token]))
    assert response.status_code == 404
    assert "evil" not in response.get("Location", "")
    assert client.get(reverse("campaigns:unsubscribe", args=[token])).status_code == 404
    if forge != "other_purpose":  # (that one is a genuine open token)
        assert client.get(reverse("campaigns:open", args=[token])).status_code == 404
        assert not Event.objects.exists()
    assert not Event.objects.filter(event_type="email_clicked").exists()


def test_unsubscribe_needs_a_post_and_then_suppresses_and_records_an_event(client: Client, sent: Message):
    url = path_of(tracking.unsubscribe_url(sent.pk))
    page = client.get(url)
    assert page.status_code == 200
    assert b"re****@example.com" in page.content  # masked: a forwarded email does not reveal the address
    assert Contact.objects.get().consent_status == ConsentStatus.GRANTED  # a GET (link scanner) changes nothing
    done = client.post(url)
    assert done.status_code == 200
    assert b"You are unsubscribed" in done.content
    contact = Contact.objects.get()
    assert contact.consent_status == ConsentStatus.WITHDRAWN
    assert Suppression.objects.get().reason == SuppressionReason.UNSUBSCRIBED
    assert list(Event.objects.values_list("event_type", flat=True)) == ["email_unsubscribed"]


def test_one_click_unsubscribe_from_a_mailbox_provider_works_without_cookies(sent: Message):
    client = Client(enforce_csrf_checks=True)
    response = client.post(path_of(tracking.unsubscribe_url(sent.pk)), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert Contact.objects.get().consent_source == "one-click unsubscribe"


def test_bad_tokens_are_rate_limited_per_client(client: Client, sent: Message):
    # (valid tokens are limited per token instead: test_tracking_limits.py)
    url = reverse("campaigns:open", args=[f"{sent.pk}:forged"])
    responses = [client.get(url)]
    # far faster than 20/s for long: the burst runs out (no timing assumption beyond "faster than 20/s")
    while responses[-1].status_code != 429 and len(responses) < 2000:
        responses.append(client.get(url))
    assert responses[0].status_code == 404
    assert responses[-1].status_code == 429
    assert responses[-1]["Retry-After"] == "1"
    assert len(responses) > 100  # the burst of 100 was allowed first


def test_an_oversized_unsubscribe_body_is_refused(client: Client, sent: Message):
    response = client.post(path_of(tracking.unsubscribe_url(sent.pk)), data="x" * 5000, content_type="text/plain")
    assert response.status_code == 413
    assert Contact.objects.get().consent_status == ConsentStatus.GRANTED


# --- Bounce webhook ---------------------------------------------------------------------------


def post_bounces(client: Client, body: object, key: str | None, *, basic: bool = False,
                 content_type: str = "application/json"):  # noqa: ANN201
    headers = {}
    if key:
        headers["Authorization"] = ("Basic " + base64.b64encode(f"leadflow:{key}".encode()).decode()) if basic \
            else f"Bearer {key}"
    return client.post("/api/v1/bounces", data=json.dumps(body), content_type=content_type, headers=headers)


def test_the_bounce_webhook_needs_a_key_and_asks_for_basic(client: Client):
    # Basic: SNS sends the credentials of its subscription URL only after such a challenge
    # (the whole exchange: test_bounces_sns.py).
    for key in (None, "lf_bogus.key"):
        response = post_bounces(client, {"bounces": []}, key)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Basic realm="leadflow", charset="UTF-8"'


def test_a_hard_bounce_suppresses_the_address_and_marks_the_message(client: Client, sent: Message):
    key = api_key_create(name="esp", scopes=["bounces:write"])[1]
    response = post_bounces(client, {"bounces": [
        {"email": "Reader@Example.com", "type": "hard", "message_id": sent.provider_message_id,
         "reason": "550 5.1.1 mailbox unknown"},
        {"email": "not-an-address", "type": "hard"},
        {"email": "x@example.com", "type": "bogus"},
    ]}, key)
    assert response.status_code == 202
    body = response.json()
    assert body["recorded"] == 1
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert "type" in body["errors"][1]["message"]
    sent.refresh_from_db()
    assert (sent.status, sent.reason) == (MessageStatus.BOUNCED, "hard_bounce")
    assert Suppression.objects.get().reason == SuppressionReason.HARD_BOUNCE
    assert Event.objects.get(event_type="email_bounced").properties["kind"] == "hard"


def test_a_malformed_bounce_body_is_a_400_that_names_the_problem(client: Client):
    key = api_key_create(name="esp", scopes=["bounces:write"])[1]
    response = post_bounces(client, {"bounce": []}, key)
    assert response.status_code == 400
    assert "bounces" in response.json()["error"]["message"]


def test_ses_complaints_via_sns_with_basic_auth_suppress_and_withdraw_consent(client: Client, sent: Message,
                                                                            settings: Any):
    key = api_key_create(name="ses", scopes=["bounces:write"])[1]
    notification = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "reader@example.com"}],
                      "complaintFeedbackType": "abuse"},
        "mail": {"messageId": "0100018c-ses-id",
                 "headers": [{"name": "Message-ID", "value": sent.provider_message_id}]},
    }
    with fake_sns_for(settings) as sns:
        response = post_bounces(client, sns.notification(notification), key, basic=True, content_type="text/plain")
    assert response.status_code == 202, response.content
    assert Suppression.objects.get().reason == SuppressionReason.COMPLAINT
    assert Contact.objects.get().consent_status == ConsentStatus.WITHDRAWN
    assert Event.objects.get(event_type="email_complained").properties["message_id"] == sent.pk
