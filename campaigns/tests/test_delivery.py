"""Delivery against a real SMTP sink: who gets mail, who does not, and why."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import override_settings
from django.utils import timezone

from campaigns.delivery import delivery_run_batch, delivery_sweep, messages_claim
from campaigns.models import Message, MessageKind, MessageStatus, SenderProfile, Suppression, SuppressionReason
from campaigns.services import QueueItem, messages_queue, messages_retry, suppression_add
from campaigns.tests.conftest import lazy_score_reads, make_contact, make_template
from contacts.models import ConsentStatus, Contact
from contacts.services import contact_erase
from core.testing.scores import score_set

pytestmark = pytest.mark.django_db


def queue(template, contacts, prefix="t"):  # noqa: ANN001, ANN201
    return messages_queue(template=template, items=[QueueItem(c.pk, f"{prefix}:{c.pk}") for c in contacts])


def statuses() -> dict[str, tuple[str, str]]:
    return {m.contact.email: (m.status, m.reason) for m in Message.objects.select_related("contact")}


def test_a_batch_sends_each_message_once_with_unsubscribe_headers(sender, template, sink):
    # given three consenting contacts with a queued welcome email
    contacts = [make_contact(f"p{i}@example.com", first_name=f"P{i}") for i in range(3)]
    queue(template, contacts)
    # when one batch runs
    result = delivery_run_batch(sender=sender)
    # then each got exactly one email, personalised, with RFC 8058 headers, and the rows say sent
    assert result.outcomes[MessageStatus.SENT] == 3
    assert sorted(r.rcpt_tos[0] for r in sink.received) == [c.email for c in contacts]
    first = next(r for r in sink.received if r.rcpt_tos == ["p0@example.com"])
    assert first.header("Subject") == "Hello P0"
    assert first.header("List-Unsubscribe").startswith("<http")
    assert "/e/u/" in first.header("List-Unsubscribe")
    assert first.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert "1 Example Street" in first.data.decode()
    message = Message.objects.get(contact=contacts[0])
    assert (message.status, message.attempts) == (MessageStatus.SENT, 1)
    assert message.provider_message_id == first.header("Message-ID")
    assert message.links == ["https://example.com/webinar"]
    assert "https://example.com/webinar" not in message.html  # the link is tracked
    # when the batch runs again, nothing is sent twice
    assert delivery_run_batch(sender=sender).claimed == 0
    assert len(sink.received) == 3


def test_a_batch_renders_each_contacts_score_and_grade_read_with_its_messages(sender, sink):
    # given a template showing score and grade; one contact scored, one that never scored (no row)
    template = make_template(key="scored", subject="{{ contact.grade|default:'-' }} {{ contact.score }}")
    scored, unscored = make_contact("scored@example.com"), make_contact("unscored@example.com")
    score_set(scored, 72, "A")
    queue(template, [scored, unscored])
    # when one batch runs
    with lazy_score_reads() as reads:
        result = delivery_run_batch(sender=sender)
    # then each email shows its contact's values (no row: 0 and no grade), read in the batch's query
    assert result.outcomes[MessageStatus.SENT] == 2
    assert {r.rcpt_tos[0]: r.header("Subject") for r in sink.received} == {
        "scored@example.com": "A 72", "unscored@example.com": "- 0"}
    assert reads == []


def test_one_permanently_rejected_recipient_fails_with_the_reason_and_the_others_go(sender, template, sink):
    contacts = [make_contact(f"r{i}@example.com") for i in range(5)]
    sink.state.reject_permanent.add("r2@example.com")
    queue(template, contacts)
    delivery_run_batch(sender=sender)
    result = statuses()
    assert result.pop("r2@example.com") == (MessageStatus.FAILED, "rejected")
    assert set(result.values()) == {(MessageStatus.SENT, "")}
    failed = Message.objects.get(contact__email="r2@example.com")
    assert "550" in failed.last_error
    assert "User unknown" in failed.last_error
    assert sorted(r.rcpt_tos[0] for r in sink.received) == sorted(result)
    # and a 550 "user unknown" suppresses the address as a hard bounce
    assert Suppression.objects.get().reason == SuppressionReason.HARD_BOUNCE


def test_a_temporary_rejection_is_deferred_with_backoff_and_sent_on_retry(sender, template, sink):
    contact = make_contact("busy@example.com")
    sink.state.reject_temporary.add("busy@example.com")
    queue(template, [contact])
    before = timezone.now()
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    assert (message.status, message.reason) == (MessageStatus.DEFERRED, "temporary_failure")
    assert message.next_attempt_at is not None
    assert message.next_attempt_at > before + dt.timedelta(seconds=10)
    assert "451" in message.last_error
    # not due yet: nothing is claimed
    assert delivery_run_batch(sender=sender).claimed == 0
    # when the backoff has passed and the mailbox accepts again
    sink.state.reject_temporary.clear()
    delivery_run_batch(sender=sender, now=message.next_attempt_at + dt.timedelta(seconds=1))
    message.refresh_from_db()
    assert (message.status, message.attempts) == (MessageStatus.SENT, 2)
    assert len(sink.received) == 1


@override_settings(DELIVERY_MAX_ATTEMPTS=2)
def test_retryable_failures_stop_after_the_attempt_limit_with_the_last_error(sender, template, sink):
    sink.state.reject_temporary.add("never@example.com")
    queue(template, [make_contact("never@example.com")])
    delivery_run_batch(sender=sender)
    later = timezone.now() + dt.timedelta(hours=2)
    delivery_run_batch(sender=sender, now=later)
    message = Message.objects.get()
    assert message.status == MessageStatus.FAILED
    assert message.last_error.startswith("gave up after 2 attempts")


def test_an_unreachable_server_defers_every_message_and_loses_none(sender, template, sink):
    queue(template, [make_contact(f"d{i}@example.com") for i in range(3)])
    sink.stop()
    delivery_run_batch(sender=sender)
    assert {(m.status, m.reason) for m in Message.objects.all()} == {(MessageStatus.DEFERRED, "connection")}
    assert all(m.next_attempt_at for m in Message.objects.all())


def test_the_same_trigger_twice_makes_one_message(sender, template):
    contact = make_contact("once@example.com")
    first = messages_queue(template=template, items=[QueueItem(contact.pk, "enrollment:7:step:welcome")])
    second = messages_queue(template=template, items=[QueueItem(contact.pk, "enrollment:7:step:welcome")])
    assert first == second
    assert Message.objects.count() == 1


def test_suppressed_contacts_are_never_sent_to(sender, template, sink):
    # given one contact per reason not to send, and one who may receive
    ok = make_contact("ok@example.com")
    unsubscribed = make_contact("unsub@example.com", consent_status=ConsentStatus.WITHDRAWN)
    unknown_consent = make_contact("unknown@example.com", consent_status=ConsentStatus.UNKNOWN)
    bounced = make_contact("bounced@example.com")
    complained = make_contact("complained@example.com")
    suppression_add(email=bounced.email, reason=SuppressionReason.HARD_BOUNCE)
    suppression_add(email=complained.email, reason=SuppressionReason.COMPLAINT)
    erased = make_contact("erased@example.com")
    contact_erase(contact=erased, actor=None)
    reimported = make_contact("erased@example.com")  # the same person imported again later
    queue(template, [ok, unsubscribed, unknown_consent, bounced, complained, reimported])
    # when delivery runs
    delivery_run_batch(sender=sender)
    # then only the consenting, unsuppressed contact got mail, and each other row says why
    assert [r.rcpt_tos for r in sink.received] == [["ok@example.com"]]
    assert statuses() == {
        "ok@example.com": (MessageStatus.SENT, ""),
        "unsub@example.com": (MessageStatus.SUPPRESSED, "unsubscribed"),
        "unknown@example.com": (MessageStatus.SUPPRESSED, "no_consent"),
        "bounced@example.com": (MessageStatus.SUPPRESSED, "hard_bounce"),
        "complained@example.com": (MessageStatus.SUPPRESSED, "complaint"),
        "erased@example.com": (MessageStatus.SUPPRESSED, "erased"),
    }
    # and the erasure kept no address
    assert Suppression.objects.get(reason="erased").email == ""


def test_transactional_email_ignores_marketing_consent_but_not_bounces(sender, sink):
    receipt = make_template("receipt", kind=MessageKind.TRANSACTIONAL)
    unsubscribed = make_contact("unsub@example.com", consent_status=ConsentStatus.WITHDRAWN)
    bounced = make_contact("bounced@example.com")
    suppression_add(email=bounced.email, reason=SuppressionReason.HARD_BOUNCE)
    queue(receipt, [unsubscribed, bounced])
    delivery_run_batch(sender=sender)
    assert statuses() == {"unsub@example.com": (MessageStatus.SENT, ""),
                          "bounced@example.com": (MessageStatus.SUPPRESSED, "hard_bounce")}


def test_the_frequency_cap_suppresses_marketing_over_the_limit(sender, template, sink):
    SenderProfile.objects.filter(pk=sender.pk).update(frequency_cap=2, frequency_days=7)
    sender.refresh_from_db()
    contact = make_contact("busy@example.com")
    for n in range(3):
        messages_queue(template=template, items=[QueueItem(contact.pk, f"newsletter:{n}")])
    delivery_run_batch(sender=sender)
    assert sorted(Message.objects.values_list("status", "reason")) == [
        (MessageStatus.SENT, ""), (MessageStatus.SENT, ""), (MessageStatus.SUPPRESSED, "frequency_cap")]
    assert len(sink.received) == 2


def test_quiet_hours_defer_marketing_until_they_end(sender, template, sink):
    SenderProfile.objects.filter(pk=sender.pk).update(quiet_hours_start=dt.time(21), quiet_hours_end=dt.time(8),
                                                      time_zone="Europe/Berlin")
    sender.refresh_from_db()
    queue(template, [make_contact("night@example.com")])
    late_evening = dt.datetime(2026, 1, 15, 22, 30, tzinfo=dt.UTC)  # 23:30 in Berlin
    delivery_run_batch(sender=sender, now=late_evening)
    message = Message.objects.get()
    assert (message.status, message.reason) == (MessageStatus.DEFERRED, "quiet_hours")
    assert message.next_attempt_at == dt.datetime(2026, 1, 16, 7, 0, tzinfo=dt.UTC)  # 08:00 in Berlin
    assert sink.received == []


def test_the_warmup_schedule_caps_each_day(sender, template, sink):
    today = timezone.now().date()
    SenderProfile.objects.filter(pk=sender.pk).update(warmup_started_on=today, warmup_schedule=[2, 10])
    sender.refresh_from_db()
    queue(template, [make_contact(f"w{i}@example.com") for i in range(3)])
    delivery_run_batch(sender=sender)
    assert sorted(Message.objects.values_list("status", flat=True)) == [
        MessageStatus.DEFERRED, MessageStatus.SENT, MessageStatus.SENT]
    assert Message.objects.get(status=MessageStatus.DEFERRED).reason == "warmup_cap"


def test_a_template_that_fails_at_send_time_fails_the_message_with_the_reason(sender, sink):
    broken = make_template("broken", html="<p>{{ contact.first_name|date:'Y' }}</p>")  # saves: no validation here
    broken.html = "<p>{% if %}</p>"
    broken.save(update_fields=["html"])
    queue(broken, [make_contact("a@example.com")])
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    assert (message.status, message.reason) == (MessageStatus.FAILED, "render_error")
    assert "html" in message.last_error
    assert sink.received == []


def test_retry_after_a_fix_sends_the_failed_message(sender, sink, django_user_model):
    broken = make_template("broken")
    broken.html = "<p>{% if %}</p>"
    broken.save(update_fields=["html"])
    queue(broken, [make_contact("a@example.com")])
    delivery_run_batch(sender=sender)
    broken.html = "<p>Fixed</p>"
    broken.save(update_fields=["html"])
    assert messages_retry(message_ids=Message.objects.values_list("id", flat=True), actor=None).queued == 1
    delivery_run_batch(sender=sender)
    assert Message.objects.get().status == MessageStatus.SENT
    assert "Fixed" in sink.received[0].data.decode()


@override_settings(DELIVERY_STALE_SECONDS=60)
def test_the_sweeper_requeues_messages_a_dead_worker_claimed(sender, template, sink):
    queue(template, [make_contact("a@example.com"), make_contact("b@example.com")])
    claimed = messages_claim(sender_id=sender.pk, limit=10, now=timezone.now() - dt.timedelta(minutes=5))
    assert len(claimed) == 2  # a worker claimed them and died
    assert delivery_run_batch(sender=sender).claimed == 0
    assert delivery_sweep()["requeued"] == 2
    delivery_run_batch(sender=sender)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["a@example.com", "b@example.com"]


def test_a_staging_message_goes_to_the_redirect_address_marked(sender, template, sink):
    contact = make_contact("real@example.com", is_test=True)
    messages_queue(template=template, items=[QueueItem(contact.pk, "staging:1", redirect_to="qa@leadflow.test")])
    delivery_run_batch(sender=sender)
    [received] = sink.received
    assert received.rcpt_tos == ["qa@leadflow.test"]
    assert received.header("Subject").startswith("[STAGING]")
    assert "Staging email for real@example.com" in received.data.decode()
    assert Contact.objects.get().email == "real@example.com"


def test_a_recipient_domain_limit_defers_what_is_over_it(sender, template, sink):
    SenderProfile.objects.filter(pk=sender.pk).update(domain_limits={"slow.example": "1/h"})
    sender.refresh_from_db()
    queue(template, [make_contact("a@slow.example"), make_contact("b@slow.example"), make_contact("c@fast.example")])
    delivery_run_batch(sender=sender)
    assert statuses() == {"a@slow.example": (MessageStatus.SENT, ""),
                          "b@slow.example": (MessageStatus.DEFERRED, "domain_rate"),
                          "c@fast.example": (MessageStatus.SENT, "")}


@pytest.mark.parametrize(("field", "value", "error_field"), [
    ("rate", "fast", "rate"),
    ("domain_limits", {"gmail.com": "lots"}, "domain_limits"),
    ("warmup_schedule", [100, -5], "warmup_schedule"),
    ("time_zone", "Mars/Olympus", "time_zone"),
    ("email_url", "carrier-pigeon://coop", "email_url"),
])
def test_a_sender_profile_with_bad_settings_names_the_field(field, value, error_field):
    from django.core.exceptions import ValidationError

    profile = SenderProfile(name="x", from_email="a@b.example", **{field: value})
    with pytest.raises(ValidationError) as info:
        profile.full_clean()
    assert error_field in info.value.message_dict


def test_a_delivery_job_that_fails_still_frees_its_slot(sender, template, monkeypatch):
    from django.db import OperationalError

    from campaigns import delivery
    from core.queues import get_connection

    queue(template, [make_contact("a@example.com")])
    get_connection().set(delivery._kick_key(sender.pk, 0), "1")

    def database_gone(**kwargs):  # noqa: ANN003, ANN202
        raise OperationalError("the database system is starting up")

    monkeypatch.setattr(delivery, "delivery_run_batch", database_gone)
    with pytest.raises(OperationalError):
        delivery.delivery_run(sender_id=sender.pk, slot=0)
    # the sweeper's next kick can start a job at once, instead of after the kick expires
    assert not get_connection().exists(delivery._kick_key(sender.pk, 0))
