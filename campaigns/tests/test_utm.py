"""UTM parameters on tracked links (issue 21 item 4): added once, never to the unsubscribe or
preference links, a link's own parameters kept; bad settings named."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from campaigns.utm import UtmInvalid, utm_apply, utm_clean

pytestmark = pytest.mark.django_db

HTML = ('<p><a href="https://example.com/a">A</a>, <a href="https://example.com/a">A again</a>, '
        '<a href="https://example.com/b?x=1&amp;utm_campaign=own#top">B</a>, '
        '<a href="mailto:help@example.com">mail</a></p>')
UTM = {"utm_source": "leadflow", "utm_medium": "email", "utm_campaign": "spring sale"}


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_utm_apply_adds_what_is_missing_and_keeps_the_links_own():
    assert utm_apply("https://example.com/a", UTM) == \
        "https://example.com/a?utm_source=leadflow&utm_medium=email&utm_campaign=spring+sale"
    assert utm_apply("https://example.com/b?x=1&utm_campaign=own#top", UTM) == \
        "https://example.com/b?x=1&utm_campaign=own&utm_source=leadflow&utm_medium=email#top"
    tagged = utm_apply("https://example.com/a", UTM)
    assert utm_apply(tagged, UTM) == tagged  # applying twice adds nothing
    assert utm_apply("https://example.com/a", {}) == "https://example.com/a"


@pytest.mark.parametrize(("value", "message"), [
    ("campaign", "utm: expected a mapping of UTM parameters"),
    ({"utm_campain": "x"}, "utm: unknown parameter 'utm_campain'"),
    ({"utm_source": ""}, "utm.utm_source: expected 1 to 200 characters"),
    ({"utm_source": "a\nb"}, "utm.utm_source: expected 1 to 200 characters"),
    ({"utm_source": ["a"]}, "utm.utm_source: expected text, got list"),
])
def test_a_bad_utm_setting_is_refused_by_name(value: Any, message: str):
    with pytest.raises(UtmInvalid, match=re.escape(message)):
        utm_clean(value)


def test_messages_queue_refuses_a_bad_utm_before_queueing(sender: Any):
    contact = make_contact("r@example.com")
    with pytest.raises(UtmInvalid, match="unknown parameter 'source'"):
        messages_queue(template=make_template(html=HTML), items=[QueueItem(contact.pk, "news:1")],
                       utm={"source": "x"})
    assert not Message.objects.exists()


def test_a_campaigns_utm_tags_each_tracked_link_once_and_never_the_unsubscribe_link(sender: Any, sink: Any):
    contact = make_contact("r@example.com")
    messages_queue(template=make_template(html=HTML), items=[QueueItem(contact.pk, "news:1")], utm=UTM)
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    assert message.status == MessageStatus.SENT

    assert message.links == [
        "https://example.com/a?utm_source=leadflow&utm_medium=email&utm_campaign=spring+sale",
        "https://example.com/b?x=1&utm_campaign=own&utm_source=leadflow&utm_medium=email#top"]
    client = Client()
    assert client.get(path_of(tracking.click_url(message.pk, 1)))["Location"] == message.links[1]
    # The unsubscribe / preference link (footer and header) and mailto: are as they were.
    hrefs = re.findall(r'href="([^"]+)"', message.html)
    assert tracking.unsubscribe_url(message.pk) in hrefs
    assert [url for url in hrefs if "/e/c/" not in url and "utm_" in url] == []
    assert "mailto:help@example.com" in hrefs
    assert "utm_" not in sink.received[0].header("List-Unsubscribe")


def test_without_a_utm_setting_links_are_left_as_written(sender: Any, sink: Any):
    contact = make_contact("r@example.com")
    messages_queue(template=make_template(html=HTML), items=[QueueItem(contact.pk, "news:1")])
    delivery_run_batch(sender=sender)
    assert Message.objects.get().links == ["https://example.com/a", "https://example.com/b?x=1&utm_campaign=own#top"]
