"""Rates that matter (issue 17, item 5): complaint and hard-bounce rates per sender and UTC day, on
the operations page, in /metrics and as incidents; a sender whose complaint rate opens an incident
is paused when SENDER_AUTO_PAUSE_ON_COMPLAINTS is on (audited, visible, resumable)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus, SenderProfile
from campaigns.services import BounceReport, QueueItem, bounces_record, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from core import alerts, ops
from core.models import AuditEntry, Incident
from core.queues import get_connection
from core.testing.html import html_section

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 3, 15, 0, tzinfo=dt.UTC)
TODAY, YESTERDAY = NOW.date(), NOW.date() - dt.timedelta(days=1)
_keys = itertools.count()


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


def outbox(sender: SenderProfile, *, day: dt.date, sent: int = 0, complaints: int = 0, bounced_after_send: int = 0,
           refused: int = 0, test_copies: int = 0) -> None:
    """Rows as delivery and the bounce endpoint leave them (sent_at / complained_at / bounced_at)."""
    contact = make_contact(f"c{next(_keys)}@example.com")
    at = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
    later = at + dt.timedelta(hours=2)

    def row(**fields: Any) -> Message:
        return Message(contact=contact, sender=sender, idempotency_key=f"k{next(_keys)}", **fields)
    rows = [row(status=MessageStatus.SENT, sent_at=at, complained_at=later if i < complaints else None)
            for i in range(sent - bounced_after_send)]
    rows += [row(status=MessageStatus.BOUNCED, reason="hard_bounce", sent_at=at, bounced_at=later)
             for _ in range(bounced_after_send)]
    rows += [row(status=MessageStatus.FAILED, reason="rejected", bounced_at=at) for _ in range(refused)]
    rows += [row(status=MessageStatus.SENT, sent_at=at, complained_at=later, is_test=True) for _ in range(test_copies)]
    Message.objects.bulk_create(rows)


@pytest.fixture
def senders(db: None) -> tuple[SenderProfile, SenderProfile]:
    news = SenderProfile.objects.create(name="news", from_email="news@example.com", rate="100/s")
    billing = SenderProfile.objects.create(name="billing", from_email="billing@example.com", rate="100/s")
    return news, billing


@pytest.fixture
def bad_day(senders: tuple[SenderProfile, SenderProfile]) -> tuple[SenderProfile, SenderProfile]:
    """news: 0.4 % complaints today (an incident), clean yesterday; billing: 0.2 % today (a warning)
    and 11 hard bounces in 200 attempts yesterday (5.5 %: an incident)."""
    news, billing = senders
    outbox(news, day=TODAY, sent=1000, complaints=4, test_copies=3)
    outbox(news, day=YESTERDAY, sent=300)
    outbox(billing, day=TODAY, sent=1000, complaints=2)
    outbox(billing, day=YESTERDAY, sent=195, bounced_after_send=6, refused=5)
    return news, billing


def test_rates_per_sender_and_day_come_from_one_grouped_query(
        bad_day: tuple[SenderProfile, SenderProfile], django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(2):  # the senders, and one grouped query over the outbox
        rates = {(r.name, r.day): r for r in ops.sender_rates(NOW)}

    assert set(rates) == {("news", TODAY), ("news", YESTERDAY), ("billing", TODAY), ("billing", YESTERDAY)}
    news_today = rates["news", TODAY]
    assert (news_today.sent, news_today.complaints) == (1000, 4)  # test copies left out
    assert (news_today.complaint_rate, news_today.complaint_level) == (0.004, "incident")
    assert rates["billing", TODAY].complaint_level == "warn"
    assert rates["news", YESTERDAY].complaint_level == ""
    billing_yesterday = rates["billing", YESTERDAY]
    assert (billing_yesterday.sent, billing_yesterday.attempted, billing_yesterday.hard_bounces) == (195, 200, 11)
    assert billing_yesterday.hard_bounce_incident
    assert not rates["news", TODAY].hard_bounce_incident


def test_the_day_before_yesterday_and_small_days_are_not_judged(senders: tuple[SenderProfile, SenderProfile]) -> None:
    news, _ = senders
    outbox(news, day=TODAY - dt.timedelta(days=2), sent=1000, complaints=50)
    outbox(news, day=TODAY, sent=50, complaints=5)  # 10 %, but 50 sends are too few to judge

    [today] = ops.sender_rates(NOW)
    assert (today.day, today.complaint_rate, today.complaint_level) == (TODAY, 0.1, "")
    assert alerts._sender_rate_firings(NOW) == []


def test_reports_and_refusals_feed_the_rates_through_the_real_paths(sender: SenderProfile, sink: Any) -> None:
    contacts = [make_contact(f"r{i}@example.com") for i in range(4)]
    sink.state.reject_permanent.add("r3@example.com")  # 550 at RCPT: a hard bounce
    messages_queue(template=make_template(), items=[QueueItem(c.pk, f"news:{c.pk}") for c in contacts])
    delivery_run_batch(sender=sender)

    bounces_record(reports=[BounceReport(email="r0@example.com", kind="complaint"),
                            BounceReport(email="r0@example.com", kind="complaint"),  # the same, reported twice
                            BounceReport(email="r1@example.com", kind="hard", detail="550 5.1.1")], source="test")

    [today] = ops.sender_rates(timezone.now())
    assert (today.sent, today.attempted, today.complaints, today.hard_bounces) == (3, 4, 1, 2)


@override_settings(METRICS_TOKEN="s3cret-token")
def test_metrics_give_each_senders_counts_and_rates_per_day(
        client: Client, bad_day: tuple[SenderProfile, SenderProfile]) -> None:
    today = timezone.now().date()  # /metrics reads the real clock: put a day of mail there too
    outbox(bad_day[0], day=today, sent=500, complaints=1)

    body = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).content.decode()

    day = today.isoformat()
    assert f'leadflow_sender_sent{{day="{day}",sender="news"}}' in body
    assert f'leadflow_sender_complaints{{day="{day}",sender="news"}}' in body
    assert "# TYPE leadflow_sender_complaint_rate gauge" in body
    assert "# TYPE leadflow_sender_hard_bounce_rate gauge" in body
    sample = f'leadflow_sender_complaints{{day="{day}",sender="news"}}'
    line = next(ln for ln in body.splitlines() if ln.startswith(sample))
    assert float(line.split()[-1]) >= 1


def test_the_operations_page_shows_rates_with_their_levels(
        client: Client, role_users: dict[str, Any], senders: tuple[SenderProfile, SenderProfile]) -> None:
    news, billing = senders
    today = timezone.now().date()
    outbox(news, day=today, sent=1000, complaints=4)
    outbox(billing, day=today, sent=1000, complaints=2)
    client.force_login(role_users["ops"])

    page = client.get(reverse("operations")).content.decode()

    table = html_section(page, '<table id="sender-rates"', "</table>")
    news_row = html_section(table, f'<tr data-sender="news" data-day="{today:%Y-%m-%d}"', "</tr>")
    assert "complaint-level-incident" in news_row
    assert "0.40%" in news_row
    billing_row = html_section(table, f'<tr data-sender="billing" data-day="{today:%Y-%m-%d}"', "</tr>")
    assert "complaint-level-warn" in billing_row
    assert "0.20%" in billing_row


@override_settings(SENDER_AUTO_PAUSE_ON_COMPLAINTS=True)
def test_a_complaint_incident_pauses_its_sender_audited_visible_and_resumable(
        client: Client, role_users: dict[str, Any], senders: tuple[SenderProfile, SenderProfile]) -> None:
    news, billing = senders
    today = timezone.now().date()
    outbox(news, day=today, sent=1000, complaints=4)
    outbox(billing, day=today, sent=1000, complaints=2)  # a warning: not an incident, not paused

    summary = alerts.alerts_check()

    assert summary["opened"] == 1
    incident = Incident.objects.get(resolved_at__isnull=True)
    assert incident.key == f"complaint_rate:{news.pk}"
    assert "complaint rate 0.40%" in incident.summary
    assert incident.summary.endswith("the sender is paused")
    assert SenderProfile.objects.get(pk=news.pk).is_paused
    assert not SenderProfile.objects.get(pk=billing.pk).is_paused
    entry = AuditEntry.objects.get(action="sender.auto_paused")
    assert (entry.actor_label, entry.target_id) == ("alerts", str(news.pk))

    # Visible on the operations page, with who paused it and why; Ops resumes it there.
    client.force_login(role_users["ops"])
    paused = html_section(client.get(reverse("operations")).content.decode(), '<table id="paused-senders"', "</table>")
    assert "news" in paused
    assert "paused automatically" in paused
    assert "complaint rate 0.40%" in paused
    response = client.post(reverse("operations-sender-resume", args=[news.pk]))
    assert response.status_code == 302
    assert not SenderProfile.objects.get(pk=news.pk).is_paused
    assert AuditEntry.objects.filter(action="sender.resumed", target_id=str(news.pk),
                                     actor_label=role_users["ops"].username).exists()

    # The incident stays open while the rate is over the line, but does not pause the sender again.
    alerts.alerts_check()
    assert not SenderProfile.objects.get(pk=news.pk).is_paused


def test_without_the_setting_the_incident_opens_and_the_sender_keeps_sending(
        senders: tuple[SenderProfile, SenderProfile]) -> None:
    news, _ = senders
    outbox(news, day=timezone.now().date(), sent=1000, complaints=3)  # exactly 0.3 %: "reaching" it counts

    alerts.alerts_check()

    assert Incident.objects.filter(key=f"complaint_rate:{news.pk}", resolved_at__isnull=True).exists()
    assert not SenderProfile.objects.get(pk=news.pk).is_paused


def test_a_hard_bounce_rate_over_the_setting_opens_an_incident(senders: tuple[SenderProfile, SenderProfile]) -> None:
    news, billing = senders
    outbox(news, day=timezone.now().date(), sent=195, bounced_after_send=6, refused=5)  # 11 of 200: 5.5 %
    outbox(billing, day=timezone.now().date(), sent=200, bounced_after_send=10)  # exactly 5 %: not over

    alerts.alerts_check()

    assert list(Incident.objects.filter(resolved_at__isnull=True).values_list("key", flat=True)) == [
        f"hard_bounce_rate:{news.pk}"]


@pytest.mark.parametrize("role", ["marketer", "sales", "outsider"])
def test_only_those_who_manage_senders_resume_them(
        client: Client, role_users: dict[str, Any], senders: tuple[SenderProfile, SenderProfile], role: str) -> None:
    news, _ = senders
    SenderProfile.objects.filter(pk=news.pk).update(is_paused=True)
    client.force_login(role_users[role])

    response = client.post(reverse("operations-sender-resume", args=[news.pk]))

    assert response.status_code in (302, 403)
    assert response.status_code == 403 or "/login/" in response["Location"]
    assert SenderProfile.objects.get(pk=news.pk).is_paused
