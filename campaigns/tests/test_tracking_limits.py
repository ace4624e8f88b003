"""Rate limits of the public /e/ endpoints, on the real Redis limiter: invalid tokens count against
the client IP, valid tokens against the token alone. Behind a reverse proxy every recipient has the
proxy's address, so a flood from one client must not refuse another recipient's unsubscribe."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns import tracking, views
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, Suppression, SuppressionReason
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact
from contacts.models import ConsentStatus, Contact, Event

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.1"  # the reverse proxy: every request arrives from it
MAX_TRIES = 2000  # far more than any burst; a loop that never sees 429 fails instead of spinning


@pytest.fixture
def ann_and_bob(sender: Any, template: Any, sink: Any) -> tuple[Message, Message]:
    ann, bob = make_contact("ann@example.com"), make_contact("bob@example.com")
    messages_queue(template=template, items=[QueueItem(ann.pk, "news:ann"), QueueItem(bob.pk, "news:bob")])
    delivery_run_batch(sender=sender)
    return Message.objects.get(contact=ann), Message.objects.get(contact=bob)


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def until_429(send: Any) -> list[int]:
    codes = [send().status_code]
    while codes[-1] != 429 and len(codes) < MAX_TRIES:
        codes.append(send().status_code)
    return codes


def flood_from(client: Client, path: str) -> None:
    """A client floods bad tokens until it is refused, and goes on: the real limiter's budget for
    its address is held empty for a minute (a refused request does not consume GCRA budget, so
    without this the budget would refill one token every 50 ms between the test's requests)."""
    codes = until_429(lambda: client.get(path))
    assert codes[-1] == 429  # the guessing client is walled off
    assert set(codes[:-1]) == {404}
    views.client_throttle(PROXY).pause(60)
    assert client.get(path).status_code == 429


def test_a_flood_of_bad_tokens_does_not_refuse_another_recipients_one_click_unsubscribe(
        ann_and_bob: tuple[Message, Message]) -> None:
    _, bob = ann_and_bob
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=PROXY)
    forged = reverse("campaigns:unsubscribe", args=["1:forged-signature"])
    flood_from(client, forged)
    assert client.post(forged, {"List-Unsubscribe": "One-Click"}).status_code == 429

    response = client.post(path_of(tracking.unsubscribe_url(bob.pk)), {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    contact = Contact.objects.get(email="bob@example.com")
    assert (contact.consent_status, contact.consent_source) == (ConsentStatus.WITHDRAWN, "one-click unsubscribe")
    assert Suppression.objects.filter(email="bob@example.com", reason=SuppressionReason.UNSUBSCRIBED).exists()
    assert Event.objects.filter(contact=contact, event_type="email_unsubscribed").exists()


def test_one_token_hammered_is_limited_on_its_own(ann_and_bob: tuple[Message, Message]) -> None:
    ann, bob = ann_and_bob
    client = Client(REMOTE_ADDR=PROXY)
    ann_page = path_of(tracking.unsubscribe_url(ann.pk))
    codes = until_429(lambda: client.get(ann_page))
    assert codes[-1] == 429
    assert set(codes[:-1]) == {200}
    assert len(codes) > views.TOKEN_RATE.burst

    # Bob, through the same proxy, is not affected; neither is the per-IP budget for bad links.
    bob_page = path_of(tracking.unsubscribe_url(bob.pk))
    assert client.get(bob_page).status_code == 200
    assert client.post(bob_page).status_code == 200
    assert Contact.objects.get(email="bob@example.com").consent_status == ConsentStatus.WITHDRAWN
    assert client.get(reverse("campaigns:unsubscribe", args=["1:forged"])).status_code == 404


def test_valid_opens_and_clicks_do_not_count_against_the_client_address(
        ann_and_bob: tuple[Message, Message]) -> None:
    ann, bob = ann_and_bob
    client = Client(REMOTE_ADDR=PROXY)
    flood_from(client, reverse("campaigns:click", args=["1.0:forged"]))

    click = client.get(path_of(tracking.click_url(bob.pk, 0)))
    pixel = client.get(path_of(tracking.open_url(bob.pk)))

    assert (click.status_code, click["Location"]) == (302, "https://example.com/webinar")
    assert (pixel.status_code, pixel["Content-Type"]) == (200, "image/gif")
    assert set(Event.objects.filter(contact=bob.contact).values_list("event_type", flat=True)) == {
        "email_opened", "email_clicked"}
    assert not Event.objects.filter(contact=ann.contact).exists()


def test_a_click_link_replayed_past_its_limit_still_leads_to_its_url_and_records_once(
        ann_and_bob: tuple[Message, Message]) -> None:
    ann, _ = ann_and_bob
    client = Client(REMOTE_ADDR=PROXY)
    url = path_of(tracking.click_url(ann.pk, 0))
    responses = [client.get(url) for _ in range(60)]  # past the token's burst of 20
    assert {(r.status_code, r["Location"]) for r in responses} == {(302, "https://example.com/webinar")}
    pixels = [client.get(path_of(tracking.open_url(ann.pk))) for _ in range(60)]
    assert {(p.status_code, p["Content-Type"]) for p in pixels} == {(200, "image/gif")}
    assert sorted(Event.objects.values_list("event_type", flat=True)) == ["email_clicked", "email_opened"]


def test_behind_a_trusted_proxy_two_visitors_have_their_own_bad_token_budgets(
        ann_and_bob: tuple[Message, Message], settings: Any) -> None:
    # Given one reverse proxy in front (README: TRUSTED_PROXY_COUNT), which appends the visitor's address
    settings.TRUSTED_PROXY_COUNT = 1
    forged = reverse("campaigns:click", args=["1.0:forged"])
    guesser = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.7")
    # When one visitor floods bad links until refused
    codes = until_429(lambda: guesser.get(forged))
    assert codes[-1] == 429
    views.client_throttle("198.51.100.7").pause(60)
    # Then another visitor through the same proxy still gets a plain 404 for a bad link
    other = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert other.get(forged).status_code == 404
    assert guesser.get(forged).status_code == 429


def test_without_trusted_proxies_a_forged_forwarded_for_does_not_escape_the_limit(
        ann_and_bob: tuple[Message, Message], settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = 0  # the default: X-Forwarded-For is the client's to write
    forged = reverse("campaigns:click", args=["1.0:forged"])
    flood_from(Client(REMOTE_ADDR=PROXY), forged)
    # The same address claiming to forward for someone else is still that address
    spoofing = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert spoofing.get(forged).status_code == 429
    assert spoofing.get(path_of(tracking.click_url(ann_and_bob[1].pk, 0))).status_code == 302
