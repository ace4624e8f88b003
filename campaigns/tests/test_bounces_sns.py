"""Amazon SES bounces, complaints and deliveries through SNS (issue 17 items 1, 2 and 7): the Basic
challenge SNS needs, signatures (versions 1 and 2) against a certificate served by a fake SNS on
loopback (core/testing/sns.py), the topic allow-list, automatic subscription confirmation, raw
message delivery, matching by the id SES answered the send with, and test copies kept off contacts."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from campaigns import sns
from campaigns.delivery import delivery_run_batch, relay_message_id
from campaigns.models import (
    EngagementKind,
    Message,
    MessageEngagement,
    MessageStatus,
    SnsNotification,
    Suppression,
    SuppressionReason,
    email_hash,
)
from campaigns.services import QueueItem, message_send_test, messages_queue, messages_retry
from campaigns.tests.conftest import make_contact
from contacts.apikeys import api_key_create
from contacts.models import ConsentStatus, Contact, Event
from core.testing.sns import TOPIC, FakeSns, fake_sns_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_sns(settings: Any) -> Iterator[FakeSns]:
    with fake_sns_for(settings) as fake:
        yield fake


@pytest.fixture
def key() -> str:
    return api_key_create(name="ses", scopes=["bounces:write"])[1]


@pytest.fixture
def sent(sender, template, sink) -> Message:  # noqa: ANN001
    contact = make_contact("reader@example.com")
    messages_queue(template=template, items=[QueueItem(contact.pk, "welcome:1")])
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    assert message.status == MessageStatus.SENT
    return message


def post(client: Client, body: Any, key: str, **headers: str):  # noqa: ANN201
    basic = base64.b64encode(f"leadflow:{key}".encode()).decode()
    return client.post("/api/v1/bounces", data=json.dumps(body), content_type="text/plain",
                       headers={"Authorization": f"Basic {basic}", **headers})


def ses_bounce(address: str, *, message_id: str = "0100018c-unknown", headers: list[dict[str, str]] | None = None,
               kind: str = "Permanent") -> dict[str, Any]:
    """An SES bounce notification as https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html
    shows it; without "include original headers" mail.headers is absent."""
    mail: dict[str, Any] = {"messageId": message_id, "source": "news@leadflow.test", "destination": [address]}
    if headers is not None:
        mail["headers"] = headers
    return {"notificationType": "Bounce", "mail": mail,
            "bounce": {"bounceType": kind, "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": address, "diagnosticCode": "smtp; 550 5.1.1 unknown"}]}}


# --- 1. The Basic challenge -----------------------------------------------------------------------


def test_without_credentials_the_endpoint_asks_for_basic_and_a_challenge_driven_client_gets_in(
        live_server: Any, fake_sns: FakeSns, key: str) -> None:
    # SNS sends the user:password of an HTTPS subscription URL only after a 401 asking for Basic
    # (https://docs.aws.amazon.com/sns/latest/dg/sns-http-https-endpoint-as-subscriber.html). urllib's
    # Basic handler behaves the same way: it answers a Basic challenge and nothing else.
    url = f"{live_server.url}/api/v1/bounces"
    body = json.dumps(fake_sns.confirmation()).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(  # noqa: S310  a loopback http URL the test built
            urllib.request.Request(url, data=body, headers={"Content-Type": "text/plain"}))  # noqa: S310
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"].startswith('Basic realm="leadflow"')

    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, url, "leadflow", key)
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "text/plain"})  # noqa: S310
    with opener.open(request) as response:
        assert response.status == 200
    assert len(fake_sns.confirmed) == 1  # and the subscription was confirmed


def test_a_wrong_key_after_the_challenge_is_still_refused(client: Client, fake_sns: FakeSns) -> None:
    response = post(client, fake_sns.confirmation(), "lf_bogus.key")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic ")
    assert fake_sns.confirmed == []


# --- 1. Signatures, topics, message types ---------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_notifications_of_both_signature_versions_are_accepted(client: Client, fake_sns: FakeSns, key: str,
                                                                      sent: Message, version: str) -> None:
    envelope = fake_sns.notification(ses_bounce("reader@example.com", message_id=sent.relay_message_id),
                                     version=version, subject="Amazon SES Email Event Notification")
    response = post(client, envelope, key)
    assert response.status_code == 202, response.content
    assert Suppression.objects.get().reason == SuppressionReason.HARD_BOUNCE


@pytest.mark.parametrize("tamper", [
    {"Message": json.dumps(ses_bounce("someone-else@example.com"))},  # the body changed after signing
    {"Subject": "added after signing"},
    {"Timestamp": "2030-01-01T00:00:00.000Z"},
    {"Signature": base64.b64encode(b"x" * 256).decode()},
    {"Signature": "not base64!"},
    {"SignatureVersion": "3"},
])
def test_a_tampered_or_unsigned_notification_is_refused_and_changes_nothing(
        client: Client, fake_sns: FakeSns, key: str, tamper: dict[str, str]) -> None:
    Contact.objects.create(email="reader@example.com")
    envelope = {**fake_sns.notification(ses_bounce("reader@example.com")), **tamper}
    response = post(client, envelope, key)
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not Suppression.objects.exists()


def test_a_notification_signed_by_another_key_is_refused(client: Client, fake_sns: FakeSns, key: str) -> None:
    with FakeSns() as impostor:  # same URL prefix rule, but its own key: its cert URL is not the one served
        envelope = impostor.notification(ses_bounce("reader@example.com"))
    envelope = {**envelope, "SigningCertURL": fake_sns.cert_url}
    assert post(client, envelope, key).status_code == 403
    assert not Suppression.objects.exists()


def test_a_topic_outside_the_allow_list_is_refused(client: Client, fake_sns: FakeSns, key: str) -> None:
    envelope = fake_sns.notification(ses_bounce("reader@example.com"),
                                     topic="arn:aws:sns:us-east-1:999999999999:someone-elses")
    response = post(client, envelope, key)
    assert response.status_code == 403
    assert "SNS_TOPIC_ARNS" in response.json()["error"]["message"]
    assert fake_sns.cert_fetches == 0  # refused before any outbound call


def test_the_signing_certificate_is_fetched_once_and_cached(client: Client, fake_sns: FakeSns, key: str) -> None:
    for n in range(3):
        assert post(client, fake_sns.notification(ses_bounce(f"r{n}@example.com")), key).status_code == 202
    assert fake_sns.cert_fetches == 1


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",  # not https
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-abc.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
    "https://s3.amazonaws.com/sns/cert.pem",  # an Amazon host, but not SNS's
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
    "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.txt",
    "https://127.0.0.1/SimpleNotificationService-abc.pem",
])
def test_the_production_certificate_rule_accepts_only_sns_hosts(settings: Any, url: str) -> None:
    settings.SNS_TEST_URL_PREFIX = ""
    assert sns.sns_url_problem(url, what="SigningCertURL", suffix=".pem") is not None
    for good in ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
                 "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
                 "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem"):
        assert sns.sns_url_problem(good, what="SigningCertURL", suffix=".pem") is None


def test_a_certificate_url_off_the_sns_hosts_is_refused_without_fetching_it(
        client: Client, fake_sns: FakeSns, key: str, settings: Any) -> None:
    envelope = fake_sns.notification(ses_bounce("reader@example.com"))
    settings.SNS_TEST_URL_PREFIX = ""  # production rule: the loopback certificate server is not SNS
    response = post(client, envelope, key)
    assert response.status_code == 403
    assert "Amazon SNS" in response.json()["error"]["message"]
    assert fake_sns.cert_fetches == 0


def test_a_subscription_confirmation_is_confirmed_automatically(client: Client, fake_sns: FakeSns, key: str) -> None:
    envelope = fake_sns.confirmation(version="2")
    response = post(client, envelope, key)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "subscription confirmed"
    assert fake_sns.confirmed == [envelope["Token"]]


def test_a_subscribe_url_off_the_sns_hosts_is_never_visited(client: Client, fake_sns: FakeSns, key: str) -> None:
    envelope = fake_sns.confirmation(subscribe_url="https://evil.example/?Action=ConfirmSubscription&Token=x")
    response = post(client, envelope, key)
    assert response.status_code == 400
    assert "SubscribeURL" in response.json()["error"]["message"]
    assert fake_sns.confirmed == []


def test_an_unsubscribe_confirmation_is_acknowledged_and_not_visited(client: Client, fake_sns: FakeSns,
                                                                     key: str) -> None:
    response = post(client, fake_sns.confirmation("UnsubscribeConfirmation"), key)
    assert response.status_code == 200
    assert response.json()["status"] == "unsubscribe noted"
    assert fake_sns.confirmed == []  # visiting its SubscribeURL would subscribe again


def test_a_delivery_notification_marks_the_message_delivered(client: Client, fake_sns: FakeSns, key: str,
                                                             sent: Message) -> None:
    delivery = {"notificationType": "Delivery", "mail": {"messageId": sent.relay_message_id},
                "delivery": {"timestamp": "2026-12-03T08:00:00.000Z", "recipients": ["reader@example.com"],
                             "smtpResponse": "250 2.6.0 Message received"}}
    response = post(client, fake_sns.notification(delivery), key)
    assert response.status_code == 202, response.content
    assert response.json()["delivered"] == 1
    sent.refresh_from_db()
    assert sent.delivered_at is not None
    assert sent.status == MessageStatus.SENT


def test_other_ses_event_types_are_acknowledged_and_ignored(client: Client, fake_sns: FakeSns, key: str) -> None:
    response = post(client, fake_sns.notification({"eventType": "Send", "mail": {"messageId": "x"}}), key)
    assert response.status_code == 202
    assert response.json() == {"ignored": "Send"}


def test_raw_message_delivery_is_accepted_with_the_key_alone(client: Client, fake_sns: FakeSns, key: str,
                                                             sent: Message) -> None:
    # SNS raw delivery posts the SES JSON without the envelope (nothing is signed then), with the
    # topic in an x-amz-sns-topic-arn header.
    raw = ses_bounce("reader@example.com", message_id=sent.relay_message_id)
    response = post(client, raw, key, **{"x-amz-sns-topic-arn": TOPIC, "x-amz-sns-rawdelivery": "true"})
    assert response.status_code == 202, response.content
    sent.refresh_from_db()
    assert sent.status == MessageStatus.BOUNCED
    other = post(client, raw, key, **{"x-amz-sns-topic-arn": "arn:aws:sns:us-east-1:999999999999:other"})
    assert other.status_code == 403


# --- 2. Matching by the id SES answered the send with ---------------------------------------------


def test_the_id_the_smtp_server_answers_is_kept_per_message(sent: Message, sink: Any) -> None:
    assert sent.relay_message_id
    assert sent.relay_message_id == sink.received[0].relay_id


@pytest.mark.django_db(transaction=True)
def test_the_id_is_kept_by_the_pipelined_sent_mark_too(sender: Any, template: Any, sink: Any) -> None:
    # Outside a transaction on Postgres the "sent" marks are pipelined (delivery._SentMarks): the id
    # travels with them.
    contacts = [make_contact(f"r{n}@example.com") for n in range(3)]
    messages_queue(template=template, items=[QueueItem(c.pk, f"welcome:{c.pk}") for c in contacts])
    delivery_run_batch(sender=sender)
    kept = dict(Message.objects.values_list("to_email", "relay_message_id"))
    assert kept == {r.rcpt_tos[0]: r.relay_id for r in sink.received}
    assert all(kept.values())


@pytest.mark.parametrize(("reply", "expected"), [
    (b"Ok 0100018c5d1e2f3a-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901-000000",
     "0100018c5d1e2f3a-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901-000000"),  # SES
    (b"2.0.0 Ok: queued as 4Bx1Yz3nQ2z9", "4Bx1Yz3nQ2z9"),  # Postfix
    (b"OK", ""), (b"Message accepted for delivery", ""),
])
def test_the_message_id_is_read_from_the_reply_to_data(reply: bytes, expected: str) -> None:
    assert relay_message_id(reply) == expected


def test_an_ses_bounce_without_original_headers_marks_its_message_by_the_ses_id(
        client: Client, fake_sns: FakeSns, key: str, sent: Message, template: Any) -> None:
    # a later message to the same address: an address match would pick it, the id picks the right one
    later = messages_queue(template=template, items=[QueueItem(sent.contact_id, "welcome:2")])[0]
    Message.objects.filter(pk=later).update(to_email="reader@example.com")
    response = post(client, fake_sns.notification(ses_bounce("reader@example.com", message_id=sent.relay_message_id)),
                    key)
    assert response.status_code == 202
    sent.refresh_from_db()
    assert (sent.status, sent.reason) == (MessageStatus.BOUNCED, "hard_bounce")
    assert Message.objects.get(pk=later).status == MessageStatus.QUEUED
    assert Event.objects.get(event_type="email_bounced").properties["message_id"] == sent.pk


def test_headers_match_when_the_ses_id_is_unknown(client: Client, fake_sns: FakeSns, key: str,
                                                  sent: Message) -> None:
    by_header = ses_bounce("reader@example.com", message_id="0100018c-not-ours",
                           headers=[{"name": "X-Leadflow-Message", "value": str(sent.pk)}])
    assert post(client, fake_sns.notification(by_header), key).status_code == 202
    sent.refresh_from_db()
    assert sent.status == MessageStatus.BOUNCED


def test_an_id_of_a_message_to_another_address_does_not_mark_it(client: Client, fake_sns: FakeSns, key: str,
                                                                sent: Message) -> None:
    Contact.objects.create(email="other@example.com")
    report = ses_bounce("other@example.com", message_id=sent.relay_message_id)
    assert post(client, fake_sns.notification(report), key).status_code == 202
    sent.refresh_from_db()
    assert sent.status == MessageStatus.SENT
    assert Suppression.objects.get().email == "other@example.com"


# --- 7. Test sends stay tests ---------------------------------------------------------------------


@pytest.fixture
def test_copy(sender, template, sink, django_user_model) -> Message:  # noqa: ANN001
    contact = make_contact("customer@example.com")
    actor = django_user_model.objects.create(username="qa-tester")
    message = message_send_test(template=template, contact=contact, to_email="tester@leadflow.test", actor=actor)
    delivery_run_batch(sender=sender)
    message.refresh_from_db()
    assert (message.status, message.to_email) == (MessageStatus.SENT, "tester@leadflow.test")
    return message


def test_a_bounce_of_a_test_copy_suppresses_the_tester_address_and_leaves_the_contact_alone(
        client: Client, fake_sns: FakeSns, key: str, test_copy: Message) -> None:
    report = ses_bounce("tester@leadflow.test", message_id=test_copy.relay_message_id)
    assert post(client, fake_sns.notification(report), key).status_code == 202
    test_copy.refresh_from_db()
    assert test_copy.status == MessageStatus.BOUNCED
    assert list(Suppression.objects.values_list("email", flat=True)) == ["tester@leadflow.test"]
    assert not Event.objects.filter(contact_id=test_copy.contact_id).exists()  # no timeline entry


def test_a_complaint_about_a_test_copy_does_not_withdraw_the_contacts_consent(
        client: Client, fake_sns: FakeSns, key: str, test_copy: Message) -> None:
    complaint = {"notificationType": "Complaint", "mail": {"messageId": test_copy.relay_message_id},
                 "complaint": {"complainedRecipients": [{"emailAddress": "tester@leadflow.test"}],
                               "complaintFeedbackType": "abuse"}}
    assert post(client, fake_sns.notification(complaint), key).status_code == 202
    assert Contact.objects.get(email="customer@example.com").consent_status == ConsentStatus.GRANTED
    assert not Event.objects.exists()
    assert not Suppression.objects.filter(email_hash=email_hash("customer@example.com")).exists()


def test_retry_refuses_a_bounced_test_copy_to_a_suppressed_address(
        client: Client, fake_sns: FakeSns, key: str, test_copy: Message, sender: Any, sink: Any,
        role_users: dict[str, Any]) -> None:
    post(client, fake_sns.notification(ses_bounce("tester@leadflow.test", message_id=test_copy.relay_message_id)),
         key)
    ops = Client()
    ops.force_login(role_users["ops"])
    response = ops.post("/admin/campaigns/message/", {"action": "retry_messages", "_selected_action": [test_copy.pk]},
                        follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"#{test_copy.pk} to tester@leadflow.test (Hard bounce)" in m and "suppression list" in m
               for m in shown), shown
    test_copy.refresh_from_db()
    assert test_copy.status == MessageStatus.BOUNCED
    delivery_run_batch(sender=sender)
    assert len(sink.received) == 1  # the first send only


def test_retry_still_queues_what_is_not_suppressed(sender: Any, template: Any) -> None:
    contact = make_contact("fine@example.com")
    [pk] = messages_queue(template=template, items=[QueueItem(contact.pk, "welcome:x")])
    Message.objects.filter(pk=pk).update(status=MessageStatus.FAILED)
    result = messages_retry(message_ids=[pk], actor=None)
    assert (result.queued, result.refused) == (1, [])


def test_a_new_test_copy_to_a_suppressed_tester_address_is_not_sent(sender: Any, template: Any, sink: Any,
                                                                     django_user_model: Any) -> None:
    from campaigns.services import suppression_add

    suppression_add(email="tester@leadflow.test", reason=SuppressionReason.HARD_BOUNCE, source="test")
    contact = make_contact("customer@example.com")
    actor = django_user_model.objects.create(username="qa-tester")
    message = message_send_test(template=template, contact=contact, to_email="tester@leadflow.test", actor=actor)
    delivery_run_batch(sender=sender)
    message.refresh_from_db()
    assert (message.status, message.reason) == (MessageStatus.SUPPRESSED, SuppressionReason.HARD_BOUNCE)
    assert sink.received == []


# --- Replays and retried deliveries (campaigns/sns.py: Timestamp window, MessageId once) ----------


def _dated(fake_sns: FakeSns, envelope: dict[str, Any], seconds_ago: float) -> dict[str, Any]:
    """The envelope published `seconds_ago` (negative: in the future), signed again by the fake SNS."""
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return fake_sns.sign({**envelope, "Timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"})


def test_a_genuine_notification_replayed_after_the_window_is_refused_and_changes_nothing(
        client: Client, fake_sns: FakeSns, key: str, sent: Message, settings: Any) -> None:
    settings.SNS_MAX_AGE_SECONDS = 3600
    bounce = fake_sns.notification(ses_bounce("reader@example.com", message_id=sent.relay_message_id))
    response = post(client, _dated(fake_sns, bounce, 3700), key)
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "sns_message_too_old"
    assert "SNS_MAX_AGE_SECONDS (3600)" in error["message"]
    assert not Suppression.objects.exists()
    assert Message.objects.get().status == MessageStatus.SENT


def test_a_notification_dated_in_the_future_is_refused(client: Client, fake_sns: FakeSns, key: str,
                                                       sent: Message) -> None:
    bounce = fake_sns.notification(ses_bounce("reader@example.com", message_id=sent.relay_message_id))
    response = post(client, _dated(fake_sns, bounce, -3600), key)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "sns_message_from_future"
    assert not Suppression.objects.exists()


def test_a_late_retry_inside_the_window_is_accepted(client: Client, fake_sns: FakeSns, key: str,
                                                    sent: Message) -> None:
    bounce = fake_sns.notification(ses_bounce("reader@example.com", message_id=sent.relay_message_id))
    assert post(client, _dated(fake_sns, bounce, 3000), key).status_code == 202
    assert Suppression.objects.get().reason == SuppressionReason.HARD_BOUNCE


def test_an_unreadable_timestamp_is_a_clear_400(client: Client, fake_sns: FakeSns, key: str) -> None:
    envelope = fake_sns.sign({**fake_sns.notification(ses_bounce("reader@example.com")), "Timestamp": "yesterday"})
    response = post(client, envelope, key)
    assert response.status_code == 400
    assert "SNS Timestamp 'yesterday'" in response.json()["error"]["message"]


def test_a_retried_delivery_of_one_soft_bounce_counts_it_once(client: Client, fake_sns: FakeSns, key: str,
                                                              sent: Message) -> None:
    # SNS delivers at least once: the same signed message, same MessageId, may arrive twice
    soft = fake_sns.notification(ses_bounce("reader@example.com", message_id=sent.relay_message_id,
                                            kind="Transient"))
    first, retry = post(client, soft, key), post(client, soft, key)
    assert (first.status_code, first.json()["recorded"]) == (202, 1)
    assert (retry.status_code, retry.json()) == (202, {"status": "duplicate", "message_id": soft["MessageId"]})
    assert MessageEngagement.objects.filter(message=sent, kind=EngagementKind.SOFT_BOUNCE).count() == 1
    # a different notification about the same message is a new report
    again = fake_sns.notification(ses_bounce("reader@example.com", message_id=sent.relay_message_id,
                                             kind="Transient"))
    assert post(client, again, key).json()["recorded"] == 1
    assert MessageEngagement.objects.filter(message=sent, kind=EngagementKind.SOFT_BOUNCE).count() == 2


def test_a_notification_that_fails_is_not_marked_processed(client: Client, fake_sns: FakeSns, key: str) -> None:
    broken = fake_sns.notification({"notificationType": "Bounce", "mail": {"messageId": "x"}})  # no "bounce"
    assert post(client, broken, key).status_code == 400
    assert not SnsNotification.objects.exists()  # rolled back with the work: SNS's retry is processed


def test_message_ids_past_the_window_are_pruned(client: Client, fake_sns: FakeSns, key: str,
                                                settings: Any) -> None:
    settings.SNS_MAX_AGE_SECONDS = 3600
    SnsNotification.objects.create(message_id="old", timestamp=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    post(client, fake_sns.notification({"notificationType": "Open"}), key)
    assert not SnsNotification.objects.filter(message_id="old").exists()
