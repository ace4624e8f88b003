"""Email reports (issue 21 item 4): every open and click is kept, unsubscribes and complaints are
attributed to the message, and report_for adds them up set-based on both databases."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import EngagementKind, Message, MessageEngagement, MessageStatus
from campaigns.reports import SERIES, Variant, ab_compare, report_csv, report_for, variant_from_report
from campaigns.services import BounceReport, QueueItem, bounces_record, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from consent.models import OneClickScope, Topic
from contacts.models import Contact
from contacts.services import contact_erase

pytestmark = pytest.mark.django_db

TWO_LINKS = '<p><a href="https://example.com/a">A</a> and <a href="https://example.com/b">B</a></p>'


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def send(sender: Any, template: Any, emails: list[str], prefix: str = "news") -> list[Message]:
    contacts = [make_contact(e) for e in emails]
    messages_queue(template=template, items=[QueueItem(c.pk, f"{prefix}:{c.pk}") for c in contacts])
    delivery_run_batch(sender=sender)
    messages = list(Message.objects.filter(template=template).order_by("id"))
    assert [m.status for m in messages] == [MessageStatus.SENT] * len(emails)
    return messages


def open_(client: Client, message: Message, times: int = 1) -> None:
    for _ in range(times):
        assert client.get(path_of(tracking.open_url(message.pk))).status_code == 200


def click(client: Client, message: Message, index: int, times: int = 1) -> None:
    for _ in range(times):
        assert client.get(path_of(tracking.click_url(message.pk, index))).status_code == 302


@pytest.fixture
def crafted(sender: Any, sink: Any) -> list[Message]:
    """Five emails with two links: repeated opens and clicks, a hard and a soft bounce (reported
    twice), an unsubscribe (posted twice) and a complaint; plus another template's email."""
    template = make_template("news", html=TWO_LINKS)
    m1, m2, m3, m4, m5 = send(sender, template, [f"r{i}@example.com" for i in range(1, 6)])
    other = send(sender, make_template("other", html=TWO_LINKS), ["o@example.com"], prefix="other")[0]
    client = Client()
    open_(client, m1, 3)
    click(client, m1, 0, 2)
    click(client, m1, 1)
    open_(client, m2)
    click(client, m2, 0)
    click(client, m3, 1)  # no pixel (images blocked): the click counts as an open
    open_(client, other, 2)
    click(client, other, 0)
    bounces_record(source="test", reports=[
        BounceReport(email=m4.to_email, kind="hard", leadflow_id=m4.pk, detail="5.1.1 no such user"),
        BounceReport(email=m5.to_email, kind="soft", leadflow_id=m5.pk, detail="4.2.2 mailbox full"),
        BounceReport(email=m5.to_email, kind="soft", leadflow_id=m5.pk, detail="4.2.2 mailbox full"),
        BounceReport(email=m5.to_email, kind="complaint", leadflow_id=m5.pk, detail="abuse"),
    ])
    for _ in range(2):
        assert client.post(path_of(tracking.unsubscribe_url(m2.pk))).status_code == 200
    return [m1, m2, m3, m4, m5]


def test_the_report_adds_up_totals_uniques_links_bounces_unsubscribes_and_complaints(crafted: list[Message]):
    report = report_for(Message.objects.filter(template__key="news"))

    assert (report.messages, report.sent, report.delivered, report.hard_bounced, report.soft_bounced) == (5, 5, 4, 1, 1)
    # m1, m2, m3 (by its click); 3 + 1 pixel loads + m3's open implied by its click (never below unique)
    assert (report.opened_unique, report.opened_total) == (3, 5)
    assert (report.clicked_unique, report.clicked_total) == (3, 5)
    assert [(link.index, link.url, link.clicks, link.unique_clicks) for link in report.links] == [
        (0, "https://example.com/a", 3, 2), (1, "https://example.com/b", 2, 2)]
    # The second unsubscribe changed nothing; the complaint (which withdraws consent too) is not one.
    assert (report.unsubscribed, report.complained) == (1, 1)
    assert report.rate("opened_unique") == pytest.approx(3 / 4)
    # Over time: every series sums to its total.
    for name in SERIES:
        assert sum(b[name] for b in report.series) == getattr(report, name), name


def test_every_open_and_click_is_a_row_and_the_first_stays_on_the_message(crafted: list[Message]):
    m1 = crafted[0]
    rows = list(MessageEngagement.objects.filter(message=m1).order_by("id").values_list("kind", "link_index"))
    assert rows == [(EngagementKind.OPEN, None)] * 3 + [(EngagementKind.CLICK, 0)] * 2 + [(EngagementKind.CLICK, 1)]
    m1.refresh_from_db()
    assert m1.opened_at is not None
    assert m1.clicked_at is not None


def test_head_requests_and_test_copies_are_not_engagement(sender: Any, sink: Any):
    message = send(sender, make_template("news", html=TWO_LINKS), ["r@example.com"])[0]
    client = Client()
    client.head(path_of(tracking.open_url(message.pk)))  # a link scanner's HEAD: served, not recorded
    Message.objects.filter(pk=message.pk).update(is_test=True)
    open_(client, message)
    click(client, message, 0)
    assert not MessageEngagement.objects.exists()


def test_hour_buckets_follow_when_things_happened(crafted: list[Message]):
    m1 = crafted[0]
    earlier = timezone.now() - dt.timedelta(hours=5)
    MessageEngagement.objects.filter(message=m1, kind=EngagementKind.OPEN).update(occurred_at=earlier)
    Message.objects.filter(pk=m1.pk).update(sent_at=earlier, opened_at=earlier)

    report = report_for(Message.objects.filter(template__key="news"), bucket="hour")

    first = report.series[0]
    assert timezone.localtime(earlier).replace(minute=0, second=0, microsecond=0) == first.start
    assert (first["sent"], first["opened_total"], first["opened_unique"]) == (1, 3, 1)
    assert sum(b["sent"] for b in report.series) == 5


def test_an_unknown_bucket_is_refused_by_name():
    with pytest.raises(ValueError, match="bucket must be one of hour, day, not 'week'"):
        report_for(Message.objects.all(), bucket="week")


@pytest.mark.parametrize("size", [2, 40])
def test_the_report_takes_the_same_few_queries_whatever_the_size(sender: Any, size: int,
                                                                 django_assert_max_num_queries: Any):
    template = make_template("bulk", html=TWO_LINKS)
    contacts = contacts_bulk(size)
    now = timezone.now()
    Message.objects.bulk_create([
        Message(contact=c, template=template, sender=sender, idempotency_key=f"bulk:{c.pk}", status="sent",
                sent_at=now - dt.timedelta(hours=i), opened_at=now, to_email=c.email,
                links=["https://example.com/a", "https://example.com/b"]) for i, c in enumerate(contacts)])
    MessageEngagement.objects.bulk_create(
        [MessageEngagement(message=m, kind=EngagementKind.OPEN, occurred_at=now) for m in Message.objects.all()]
        + [MessageEngagement(message=m, kind=EngagementKind.CLICK, link_index=i % 2, occurred_at=now)
           for i, m in enumerate(Message.objects.all())])

    with django_assert_max_num_queries(6):
        report = report_for(Message.objects.filter(template=template), bucket="hour")

    assert (report.sent, report.opened_total, report.clicked_total, len(report.links)) == (size, size, size, 2)


def contacts_bulk(n: int) -> list[Contact]:
    Contact.objects.bulk_create([Contact(email=f"b{i}@example.com") for i in range(n)])
    return list(Contact.objects.filter(email__startswith="b").order_by("id"))


def test_the_csv_export_escapes_formulas_and_lists_totals_links_and_series(crafted: list[Message]):
    report = report_for(Message.objects.filter(template__key="news"))
    rows = list(csv.reader(io.StringIO(report_csv(report, title="=HYPERLINK(\"http://evil\")"))))
    assert rows[0] == ["report", "'=HYPERLINK(\"http://evil\")"]
    assert ["Sent", "5", ""] in rows
    assert ["Opened (unique)", "3", "0.7500"] in rows
    assert ["0", "https://example.com/a", "3", "2"] in rows
    assert ["day", *SERIES] in rows


# --- A/B -------------------------------------------------------------------------------------------


def test_ab_compare_gives_the_difference_and_a_two_proportion_z_test_confidence():
    result = ab_compare([Variant("A", 200, 1000), Variant("B", 250, 1000)])
    assert result.leader == "B"
    a = result.results[0]
    # pooled p = 0.225; se = sqrt(0.225 * 0.775 * 2/1000) = 0.018675; z = 0.05 / se = 2.6774
    assert a.difference == pytest.approx(0.05)
    assert a.z == pytest.approx(2.6774, abs=1e-3)
    assert a.confidence == pytest.approx(0.99258, abs=1e-4)
    assert result.results[1].difference == 0.0
    assert result.results[1].confidence is None


def test_ab_compare_corrects_for_several_variants_and_handles_empty_ones():
    two = ab_compare([Variant("A", 200, 1000), Variant("B", 250, 1000)]).results[0]
    four = ab_compare([Variant("A", 200, 1000), Variant("B", 250, 1000), Variant("C", 240, 1000),
                       Variant("D", 0, 0)])
    a = four.results[0]
    assert two.p_value is not None
    assert a.p_value == pytest.approx(min(1.0, two.p_value * 2))  # two comparisons: D has no trials
    assert four.results[3].rate is None
    assert four.results[3].confidence is None
    assert ab_compare([Variant("A", 0, 10), Variant("B", 0, 10)]).results[1].confidence == 0.0


def test_ab_compare_names_a_bad_variant():
    with pytest.raises(ValueError, match="variant 'B': successes must be between 0 and trials"):
        ab_compare([Variant("A", 1, 10), Variant("B", 11, 10)])
    with pytest.raises(ValueError, match="at least two variants"):
        ab_compare([Variant("A", 1, 10)])


def test_a_variant_from_a_report_is_unique_opens_of_delivered(crafted: list[Message]):
    report = report_for(Message.objects.filter(template__key="news"))
    assert variant_from_report("A", report) == Variant("A", 3, 4)
    assert variant_from_report("A", report, metric="clicked_unique") == Variant("A", 3, 4)


def test_leaving_topics_through_an_email_counts_once_for_that_email(sender: Any, sink: Any):
    news = Topic.objects.create(key="news", name="News", one_click_scope=OneClickScope.TOPIC)
    Topic.objects.create(key="events", name="Events")
    m1, m2 = send(sender, make_template("news", html=TWO_LINKS, topic=news), ["a@example.com", "b@example.com"])
    client = Client()
    # A mailbox provider's one-click POST leaves the email's topic (twice: the second changes nothing).
    for _ in range(2):
        client.post(path_of(tracking.unsubscribe_url(m1.pk)), {"List-Unsubscribe": "One-Click"})
    # The preference center: both topics left at once, then saved again.
    for _ in range(2):
        client.post(path_of(tracking.unsubscribe_url(m2.pk)), {"action": "topics"})

    assert report_for(Message.objects.filter(template__key="news")).unsubscribed == 2
    assert MessageEngagement.objects.filter(kind=EngagementKind.UNSUBSCRIBE).count() == 2


def test_erasing_a_contact_erases_its_engagement(crafted: list[Message]):
    m1 = crafted[0]
    contact_erase(contact=m1.contact, actor="test")

    assert not MessageEngagement.objects.filter(message_id=m1.pk).exists()
    # m2's open is left, and m3's implied by its click
    assert report_for(Message.objects.filter(template__key="news")).opened_total == 2
