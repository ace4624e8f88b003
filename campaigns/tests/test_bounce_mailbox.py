"""Bounce mailboxes over IMAP (issue 17 item 3): a real IMAP server on loopback (core/testing/imapserver.py,
written from RFC 3501) holds DSNs and feedback reports modelled on real ones (dsn_samples/); a poll
applies them like POST /api/v1/bounces, exactly once, and leaves what it cannot read for a human."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from campaigns import tasks
from campaigns.bounce_mailbox import DONE_KEYWORD, UNPARSED_KEYWORD, MailboxError, bounce_mailbox_poll
from campaigns.delivery import delivery_run_batch
from campaigns.models import (
    BounceItemStatus,
    BounceMailboxItem,
    Message,
    MessageStatus,
    SenderProfile,
    Suppression,
    SuppressionReason,
    email_hash,
)
from campaigns.services import QueueItem, message_send_test, messages_queue
from campaigns.tests.conftest import make_contact
from campaigns.tests.test_dsn import sample
from contacts.models import ConsentStatus, Contact, Event
from core.testing.imapserver import ImapServer, imap_server

pytestmark = pytest.mark.django_db

USER, PASSWORD = "bounces@leadflow.test", "imap-s3cret"


def configure(sender: SenderProfile, imap: ImapServer, **fields: Any) -> SenderProfile:
    values = {"bounce_imap_host": "127.0.0.1", "bounce_imap_port": imap.port, "bounce_imap_security": "plain",
              "bounce_imap_user": USER, "bounce_imap_password_env": "LEADFLOW_IMAP_MAIN", **fields}
    for name, value in values.items():
        setattr(sender, name, value)
    sender.full_clean()
    sender.save()
    return sender


@pytest.fixture
def imap(sender: SenderProfile, monkeypatch: pytest.MonkeyPatch) -> Iterator[ImapServer]:
    monkeypatch.setenv("LEADFLOW_IMAP_MAIN", PASSWORD)
    with imap_server() as server:
        server.add_account(USER, PASSWORD)
        configure(sender, server)
        yield server


def send(sender: SenderProfile, template: Any, *addresses: str) -> dict[str, Message]:
    for index, address in enumerate(addresses):
        contact = make_contact(address)
        messages_queue(template=template, items=[QueueItem(contact.pk, f"welcome:{index}:{address}")])
    delivery_run_batch(sender=sender)
    sent = {m.to_email: m for m in Message.objects.all()}
    assert all(m.status == MessageStatus.SENT for m in sent.values())
    return sent


def about(name: str, message: Message) -> bytes:
    """A sample DSN or report whose returned headers are those of `message`."""
    return sample(name, message_id=message.provider_message_id, leadflow_id=message.pk)


def flags(imap: ImapServer, uid: int) -> set[str]:
    return next(m.flags for m in imap.messages(USER) if m.uid == uid)


def test_hard_bounces_from_postfix_gmail_and_exchange_suppress_the_address_and_mark_the_message(
        imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    # given three sent messages and the three providers' bounces of them in the mailbox
    sent = send(sender, template, "gone@example.com", "nobody.here@gmail.com", "former.employee@contoso.example")
    uids = [imap.deliver(USER, about("postfix_hard_5_1_1.eml", sent["gone@example.com"])),
            imap.deliver(USER, about("gmail_hard_5_1_1.eml", sent["nobody.here@gmail.com"])),
            imap.deliver(USER, about("exchange_hard_5_1_10.eml", sent["former.employee@contoso.example"]))]
    # when the mailbox is polled
    result = bounce_mailbox_poll(sender=sender)
    # then each message is bounced and its address suppressed as a hard bounce, with the server's words
    assert (result.processed, result.ignored, result.unparsed) == (3, 0, 0)
    for address, status in [("gone@example.com", "5.1.1"), ("nobody.here@gmail.com", "5.1.1"),
                            ("former.employee@contoso.example", "5.1.10")]:
        message = Message.objects.get(pk=sent[address].pk)
        assert (message.status, message.reason) == (MessageStatus.BOUNCED, "hard_bounce")
        assert message.last_error.startswith(status)
        suppression = Suppression.objects.get(email_hash=email_hash(address))
        assert suppression.reason == SuppressionReason.HARD_BOUNCE
        assert suppression.source == f"bounce mailbox {USER}@127.0.0.1:{imap.port}/INBOX"
    assert Event.objects.filter(event_type="email_bounced").count() == 3
    # and each mail is marked read and handled on the server
    assert all(flags(imap, uid) == {"\\Seen", DONE_KEYWORD} for uid in uids)
    assert set(BounceMailboxItem.objects.values_list("status", flat=True)) == {BounceItemStatus.PROCESSED}


def test_soft_bounces_are_events_and_never_suppress(imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    sent = send(sender, template, "slow@example.net", "away@example.org", "landed@example.org")
    imap.deliver(USER, about("postfix_delayed_4_4_1.eml", sent["slow@example.net"]))
    imap.deliver(USER, about("rfc3464_soft_failed_4_0_0.eml", sent["away@example.org"]))
    result = bounce_mailbox_poll(sender=sender)
    assert result.processed == 2
    assert not Suppression.objects.exists()
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    soft = Event.objects.filter(event_type="email_bounced")
    assert sorted(e.properties["kind"] for e in soft) == ["soft", "soft"]
    item = BounceMailboxItem.objects.get(recipients__0__email="away@example.org")
    assert item.recipients[0]["status"] == "4.0.0"
    assert item.recipients[0]["outcome"] == "event only (soft)"


def test_an_arf_abuse_report_suppresses_as_a_complaint_and_withdraws_consent(
        imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    sent = send(sender, template, "annoyed@example.com")
    imap.deliver(USER, about("rfc5965_arf_abuse.eml", sent["annoyed@example.com"]))
    bounce_mailbox_poll(sender=sender)
    assert Suppression.objects.get(email_hash=email_hash("annoyed@example.com")).reason == SuppressionReason.COMPLAINT
    assert Contact.objects.get(email="annoyed@example.com").consent_status == ConsentStatus.WITHDRAWN
    assert Message.objects.get().complained_at is not None
    assert Event.objects.filter(event_type="email_complained").count() == 1


def test_a_redacted_feedback_report_finds_its_recipient_by_our_message_id(
        imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    # given a provider's report that redacts the recipient (To: redacted@..., no Original-Rcpt-To)
    sent = send(sender, template, "reader@example.com")
    imap.deliver(USER, about("arf_abuse_redacted.eml", sent["reader@example.com"]))
    bounce_mailbox_poll(sender=sender)
    # then our Message-ID in the reported headers names the message, and so who complained
    assert Suppression.objects.get(email_hash=email_hash("reader@example.com")).reason == SuppressionReason.COMPLAINT
    assert not Suppression.objects.filter(email_hash=email_hash("redacted@example-mail.com")).exists()


def test_an_autoreply_is_ignored_and_a_malformed_dsn_is_left_for_a_human_without_blocking_the_rest(
        imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    sent = send(sender, template, "reader@example.com", "gone@example.com")
    ooo = imap.deliver(USER, about("out_of_office.eml", sent["reader@example.com"]))
    broken = imap.deliver(USER, sample("malformed_no_recipient.eml"))
    bounce = imap.deliver(USER, about("postfix_hard_5_1_1.eml", sent["gone@example.com"]))
    result = bounce_mailbox_poll(sender=sender)
    assert (result.processed, result.ignored, result.unparsed) == (1, 1, 1)
    # the bounce after the broken one was applied
    assert Message.objects.get(pk=sent["gone@example.com"].pk).status == MessageStatus.BOUNCED
    # the autoreply changed nothing and is marked handled
    assert Message.objects.get(pk=sent["reader@example.com"].pk).status == MessageStatus.SENT
    assert BounceMailboxItem.objects.get(uid=ooo).reason == "automatic reply (Auto-Submitted: auto-replied)"
    assert flags(imap, ooo) == {"\\Seen", DONE_KEYWORD}
    # the malformed one is recorded with its reason and stays unread and flagged for a human
    item = BounceMailboxItem.objects.get(uid=broken)
    assert item.status == BounceItemStatus.UNPARSED
    assert item.reason == "the message/delivery-status part names no recipient (RFC 3464 section 2.1)"
    assert item.subject == "failure notice"
    assert flags(imap, broken) == {UNPARSED_KEYWORD, "\\Flagged"}
    assert flags(imap, bounce) == {"\\Seen", DONE_KEYWORD}
    # and the next poll finds nothing new to do
    again = bounce_mailbox_poll(sender=sender)
    assert (again.processed, again.ignored, again.unparsed, again.already) == (0, 0, 0, 0)
    assert BounceMailboxItem.objects.count() == 3


def test_a_poll_that_dies_before_flagging_counts_nothing_twice(
        imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    # given a complaint and a poll whose connection drops when it flags the mail (after the commit)
    sent = send(sender, template, "annoyed@example.com")
    uid = imap.deliver(USER, about("rfc5965_arf_abuse.eml", sent["annoyed@example.com"]))
    imap.drop_on = "STORE"
    with pytest.raises(MailboxError, match=f"bounce mailbox {USER}@127.0.0.1"):
        bounce_mailbox_poll(sender=sender)
    assert flags(imap, uid) == set()  # still unhandled on the server
    assert Event.objects.filter(event_type="email_complained").count() == 1
    complained_at = Message.objects.get().complained_at
    # when the next poll reads it again
    imap.drop_on = None
    result = bounce_mailbox_poll(sender=sender)
    # then it is only flagged: one item, one event, the complaint time unchanged
    assert (result.processed, result.already) == (0, 1)
    assert BounceMailboxItem.objects.count() == 1
    assert Event.objects.filter(event_type="email_complained").count() == 1
    assert Message.objects.get().complained_at == complained_at
    assert flags(imap, uid) == {"\\Seen", DONE_KEYWORD}


def test_the_same_dsn_delivered_twice_is_applied_once(imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    sent = send(sender, template, "gone@example.com")
    raw = about("postfix_hard_5_1_1.eml", sent["gone@example.com"])
    first, second = imap.deliver(USER, raw), imap.deliver(USER, raw)
    result = bounce_mailbox_poll(sender=sender)
    assert (result.processed, result.already) == (1, 1)
    assert BounceMailboxItem.objects.get().uid == first
    assert flags(imap, second) == {"\\Seen", DONE_KEYWORD}


def test_a_bounce_about_an_address_never_sent_to_suppresses_nothing(
        imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    # anyone can mail the bounce mailbox: a DSN naming a stranger's address is recorded, not obeyed
    imap.deliver(USER, sample("postfix_hard_5_1_1.eml"))
    bounce_mailbox_poll(sender=sender)
    assert not Suppression.objects.exists()
    item = BounceMailboxItem.objects.get()
    assert item.recipients[0]["outcome"] == "unknown: no message was sent to this address"


def test_a_bounce_of_a_test_copy_suppresses_the_tester_and_leaves_the_contact_alone(
        imap: ImapServer, sender: SenderProfile, template: Any, role_users: Any) -> None:
    contact = make_contact("gone@example.com")
    message_send_test(template=template, contact=contact, to_email="tester@example.com", actor=role_users["admin"])
    delivery_run_batch(sender=sender)
    copy = Message.objects.get()
    raw = about("postfix_hard_5_1_1.eml", copy).replace(b"gone@example.com", b"tester@example.com")
    imap.deliver(USER, raw)
    bounce_mailbox_poll(sender=sender)
    assert Suppression.objects.get().email == "tester@example.com"
    assert Message.objects.get().status == MessageStatus.BOUNCED
    assert not Event.objects.filter(contact=contact).exists()


def test_a_server_that_cannot_keep_keywords_gets_read_and_flagged_marks(
        sender: SenderProfile, template: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_IMAP_MAIN", PASSWORD)
    with imap_server(keywords=False) as server:
        server.add_account(USER, PASSWORD)
        configure(sender, server)
        sent = send(sender, template, "gone@example.com")
        done = server.deliver(USER, about("postfix_hard_5_1_1.eml", sent["gone@example.com"]))
        broken = server.deliver(USER, sample("malformed_no_recipient.eml"))
        bounce_mailbox_poll(sender=sender)
        assert flags(server, done) == {"\\Seen"}
        assert flags(server, broken) == {"\\Seen", "\\Flagged"}  # read, or every poll would fetch it again
        again = bounce_mailbox_poll(sender=sender)
        assert (again.processed, again.unparsed, again.already) == (0, 0, 0)


@pytest.mark.parametrize("security", ["plain", "tls"])
def test_the_imap_connection_goes_through_the_outbound_address_check(
        imap: ImapServer, sender: SenderProfile, settings: Any, security: str) -> None:
    # given a mailbox saved while loopback was allowed, then the allowance removed
    configure(sender, imap, bounce_imap_security=security)
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(MailboxError, match="IMAP server 127.0.0.1 is a loopback address"):
        bounce_mailbox_poll(sender=sender)
    assert imap.commands == []  # nothing reached the server
    with pytest.raises(ValidationError) as refused:
        sender.full_clean()
    assert "IMAP host 127.0.0.1" in str(refused.value.message_dict["bounce_imap_host"])


def test_settings_errors_name_the_field(sender: SenderProfile, monkeypatch: pytest.MonkeyPatch) -> None:
    sender.bounce_imap_host = "imap.example.com"
    sender.bounce_imap_password_env = "DATABASE_URL"
    sender.bounce_imap_folder = 'Bad"Folder'
    with pytest.raises(ValidationError) as refused:
        sender.full_clean()
    errors = refused.value.message_dict
    assert "DATABASE_URL may not hold an IMAP password" in errors["bounce_imap_password_env"][0]
    assert "LEADFLOW_IMAP_" in errors["bounce_imap_password_env"][0]
    assert errors["bounce_imap_user"] == ["The mailbox's login is required with an IMAP host"]
    assert "bounce_imap_folder" in errors


def test_a_wrong_password_or_missing_variable_or_folder_is_a_clear_error(
        imap: ImapServer, sender: SenderProfile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_IMAP_MAIN", "wrong")
    with pytest.raises(MailboxError, match=r"AUTHENTICATIONFAILED"):
        bounce_mailbox_poll(sender=sender)
    monkeypatch.delenv("LEADFLOW_IMAP_MAIN")
    with pytest.raises(MailboxError, match="the environment variable LEADFLOW_IMAP_MAIN is not set"):
        bounce_mailbox_poll(sender=sender)
    monkeypatch.setenv("LEADFLOW_IMAP_MAIN", PASSWORD)
    configure(sender, imap, bounce_imap_folder="Bounces")
    with pytest.raises(MailboxError, match="folder 'Bounces'"):
        bounce_mailbox_poll(sender=sender)


def test_the_command_polls_once_and_the_job_polls_every_mailbox_once(
        imap: ImapServer, sender: SenderProfile, template: Any) -> None:
    # a second sender using the same mailbox: it is read once
    SenderProfile.objects.create(name="Other", from_email="other@leadflow.test", bounce_imap_host="127.0.0.1",
                                 bounce_imap_port=imap.port, bounce_imap_security="plain", bounce_imap_user=USER,
                                 bounce_imap_password_env="LEADFLOW_IMAP_MAIN")
    sent = send(sender, template, "gone@example.com")
    imap.deliver(USER, about("postfix_hard_5_1_1.eml", sent["gone@example.com"]))
    out = StringIO()
    call_command("bounces_poll", "--sender", "Main", stdout=out)
    assert f"Main ({USER}@127.0.0.1:{imap.port}/INBOX): 1 processed, 0 ignored, 0 unparsed" in out.getvalue()
    imap.deliver(USER, sample("out_of_office.eml"))
    assert tasks.bounce_mailboxes_poll_job() == {"Main": "0 processed, 1 ignored, 0 unparsed"}
    with pytest.raises(CommandError, match="no sender profile named 'Nope'"):
        call_command("bounces_poll", "--sender", "Nope")
    SenderProfile.objects.filter(name="Other").update(bounce_imap_port=1)  # nothing listens there
    with pytest.raises(RuntimeError, match="Other: bounce mailbox"):
        tasks.bounce_mailboxes_poll_job()


def test_a_password_typed_in_the_admin_is_stored_encrypted_and_logs_in(
        imap: ImapServer, sender: SenderProfile, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.forms.models import model_to_dict

    from campaigns.admin import SenderProfileForm

    data = {k: v for k, v in model_to_dict(sender).items() if v is not None}
    data.update(domain_limits="{}", warmup_schedule="[]", bounce_imap_password_env="",
                bounce_imap_password=PASSWORD)
    form = SenderProfileForm(data=data, instance=sender)
    assert form.is_valid(), form.errors
    form.save()
    stored = SenderProfile.objects.get(pk=sender.pk)
    assert stored.bounce_imap_password_encrypted
    assert PASSWORD not in stored.bounce_imap_password_encrypted
    monkeypatch.delenv("LEADFLOW_IMAP_MAIN")
    assert bounce_mailbox_poll(sender=stored).mailbox.startswith(USER)  # logged in with the stored password


def test_ops_see_the_unparsed_mails_with_their_reason(client: Any, role_users: Any, imap: ImapServer,
                                                       sender: SenderProfile) -> None:
    imap.deliver(USER, sample("malformed_no_recipient.eml"))
    bounce_mailbox_poll(sender=sender)
    client.force_login(role_users["ops"])
    listing = client.get("/admin/campaigns/bouncemailboxitem/?status__exact=unparsed")
    assert listing.status_code == 200
    assert "failure notice" in listing.content.decode()
    item = BounceMailboxItem.objects.get()
    page = client.get(f"/admin/campaigns/bouncemailboxitem/{item.pk}/change/")
    assert "names no recipient" in page.content.decode()
    client.force_login(role_users["sales"])
    assert client.get("/admin/campaigns/bouncemailboxitem/").status_code == 403


@pytest.mark.parametrize(("tls", "security"), [("implicit", "tls"), ("starttls", "starttls")])
def test_tls_and_starttls_mailboxes_verify_the_certificate_and_poll(
        sender: SenderProfile, template: Any, monkeypatch: pytest.MonkeyPatch, tls: str, security: str) -> None:
    monkeypatch.setenv("LEADFLOW_IMAP_MAIN", PASSWORD)
    with imap_server(tls=tls) as server:
        server.add_account(USER, PASSWORD)
        configure(sender, server, bounce_imap_security=security)
        sent = send(sender, template, "gone@example.com")
        server.deliver(USER, about("postfix_hard_5_1_1.eml", sent["gone@example.com"]))
        # a certificate nobody vouches for is refused before the password is sent
        with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED"):
            bounce_mailbox_poll(sender=sender)
        assert not any(c.startswith("LOGIN") for c in server.commands)
        # trusted (OpenSSL's SSL_CERT_FILE), the poll goes through
        monkeypatch.setenv("SSL_CERT_FILE", server.cert_file)
        assert bounce_mailbox_poll(sender=sender).processed == 1
    assert Message.objects.get().status == MessageStatus.BOUNCED
