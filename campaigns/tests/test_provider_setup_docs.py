"""docs/delivery.md's "Setting up a provider" (issue 17), tested by following it: each step's settings,
commands and admin fields are read from the doc's own code spans and tables, in the doc's order, and
done with real parts (the SMTP sink answering like SES's SMTP interface, a relay answering like
Postfix, the fake SNS of core/testing/sns.py, the IMAP server of core/testing/imapserver.py). A doc
edit that renames a setting, a command or a field, or adds a placeholder, fails here.

Amazon's side follows its public documentation: SES's SMTP reply and the mailbox simulator
(https://docs.aws.amazon.com/ses/latest/dg/send-an-email-from-console.html#send-email-simulator),
SES notification contents for identity notifications (`notificationType`) and configuration-set event
publishing (`eventType`) (https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html,
https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html), and SNS's
Basic-auth challenge for HTTPS endpoints
(https://docs.aws.amazon.com/sns/latest/dg/sns-http-https-endpoint-as-subscriber.html).
"""

from __future__ import annotations

import email.utils
import json
import re
import secrets
import shlex
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.test import Client

from campaigns.bounce_mailbox import SECURITY_PORTS
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus, SenderProfile, Suppression, SuppressionReason, email_hash
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact
from campaigns.tests.test_dsn import sample
from config.env import env_email, env_sns_topics
from contacts.models import ConsentStatus, Contact
from core.testing import smtpsink
from core.testing.imapserver import imap_server
from core.testing.sns import FakeSns

pytestmark = pytest.mark.django_db(transaction=True)  # live_server: the web thread sees committed rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "delivery.md"
IMAP_PASSWORD = "imap-s3cret"


# --- Reading the doc --------------------------------------------------------------------------------


def doc_section(title: str) -> str:
    """The text under `## <title>` up to the next `## ` heading."""
    text = DOC.read_text(encoding="utf-8")
    heading = f"\n## {title}\n"
    assert heading in text, f"docs/delivery.md has no section {title!r}"
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    return text[start:end if end != -1 else None]


def doc_steps(section: str) -> dict[int, str]:
    """Numbered steps ("1. ...", continued by indented lines and blank lines) by number."""
    steps = {int(m.group(1)): m.group(2)
             for m in re.finditer(r"^(\d+)\. (.*?)(?=\n(?![ \n])|\Z)", section, re.MULTILINE | re.DOTALL)}
    assert list(steps) == list(range(1, len(steps) + 1)), f"steps out of order: {list(steps)}"
    return steps


def code_spans(text: str) -> list[str]:
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


def the_span(step: str, pattern: str) -> str:
    """The one code span of the step matching the regex `pattern` (from its start)."""
    found = [span for span in code_spans(step) if re.match(pattern, span)]
    assert len(found) == 1, f"expected one code span like {pattern!r} in the step, found {found}: {step[:200]}"
    return found[0]


def fill(template: str, **values: str) -> str:
    """The doc's `<placeholder>`s replaced; a placeholder this test does not know fails it."""
    for name, value in values.items():
        template = template.replace(f"<{name}>", value)
    assert not re.search(r"<[^<>]+>", template), f"unknown placeholder left in {template!r}"
    return template


def run_documented(command: str, **values: str) -> tuple[str, str]:
    """Run a documented `python manage.py ...` line as written (placeholders filled): stdout, stderr."""
    argv = shlex.split(fill(command, **values))
    assert argv[:2] == ["python", "manage.py"], command
    out, err = StringIO(), StringIO()
    call_command(argv[2], *argv[3:], stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def table_first_column(step: str) -> list[str]:
    rows = [line.strip() for line in step.splitlines() if line.strip().startswith("|")]
    cells = [row.strip("|").split("|")[0].strip() for row in rows[2:]]  # after the header and its rule
    return [cell.strip("`") for cell in cells]


# --- Real parts -----------------------------------------------------------------------------------


class _PostfixReply(smtpsink._Handler):
    """Answers DATA like Postfix's smtpd, "250 2.0.0 Ok: queued as <queue id>" (the id is what its
    DSNs name as X-Postfix-Queue-ID; Postfix's bounce(5)/DSN_README), and keeps the id as relay_id."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await super().handle_DATA(server, session, envelope)
        queue_id = secrets.token_hex(5).upper()
        with self.state.lock:
            self.state.received[-1].relay_id = queue_id
        return f"250 2.0.0 Ok: queued as {queue_id}"


@pytest.fixture
def relay() -> Iterator[smtpsink.SmtpSink]:
    relay = smtpsink.SmtpSink()
    relay._controller.handler = _PostfixReply(relay.state)
    with relay:
        yield relay


def postfix_dsn(received: smtpsink.Received, *, status: str = "5.1.1") -> bytes:
    """The DSN a Postfix relay returns to the envelope sender for `received` (RFC 3464 multipart/report,
    Postfix's per-message fields, as in dsn_samples/postfix_hard_5_1_1.eml) without the returned
    message (RET=HDRS trimmed, or a relay that returns nothing): only the queue id names the message."""
    [rcpt] = received.rcpt_tos
    boundary = f"{received.relay_id}.1764580364/relay.leadflow.test"
    return f"""Return-Path: <>
From: MAILER-DAEMON@relay.leadflow.test (Mail Delivery System)
To: {received.mail_from}
Subject: Undelivered Mail Returned to Sender
Date: {email.utils.formatdate()}
Message-Id: {email.utils.make_msgid(domain="relay.leadflow.test")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

<{rcpt}>: host mx.example.com[203.0.113.25] said: 550 {status} User unknown
    (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.leadflow.test
X-Postfix-Queue-ID: {received.relay_id}
X-Postfix-Sender: rfc822; {received.mail_from}

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 {status} <{rcpt}>: Recipient address rejected: User unknown

--{boundary}--
""".replace("\n", "\r\n").encode()


class _FormValues(HTMLParser):
    """The values a browser would submit for one <form id=...> (inputs, checked boxes, selected options,
    textareas): what an admin user's "Save" posts when they change only the fields the doc names."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or not a.get("name") and tag != "option":
            return
        if tag == "input" and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") not in ("checkbox", "radio") or "checked" in a:
                self.values[a["name"]] = a.get("value", "on" if a.get("type") == "checkbox" else "")
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value", "")
        elif tag == "textarea":
            self._textarea = a["name"]
            self.values[self._textarea] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea] += data.lstrip("\n") if not self.values[self._textarea] else data


def admin_save(client: Client, url: str, form_id: str, changes: dict[str, Any]) -> Any:
    page = client.get(url)
    assert page.status_code == 200
    parser = _FormValues(form_id)
    parser.feed(page.content.decode())
    assert parser.values, f"no form {form_id} on {url}"
    missing = set(changes) - set(parser.values) - {"bounce_imap_password"}
    assert not missing, f"the admin form has no fields {missing}"
    return client.post(url, {**parser.values, **{k: str(v) for k, v in changes.items()}})


def make_sender(url: str, **fields: Any) -> SenderProfile:
    return SenderProfile.objects.create(**{"name": "Newsletter", "from_email": "news@leadflow.test",
                                           "from_name": "Leadflow", "email_url": url, "rate": "1000/s", "burst": 100,
                                           "is_default": True, "postal_address": "1 Example Street, Springfield",
                                           **fields})


def send(sender: SenderProfile, template: Any, *addresses: str) -> list[Message]:
    """Queue one message per address (an address twice: two messages), run a delivery batch: the new messages."""
    before = Message.objects.count()
    for index, address in enumerate(addresses, start=before):
        contact = Contact.objects.filter(email=address).first() or make_contact(address)
        messages_queue(template=template, items=[QueueItem(contact.pk, f"setup:{index}:{address}")])
    delivery_run_batch(sender=sender)
    messages = list(Message.objects.order_by("pk"))[before:]
    assert [m.status for m in messages] == [MessageStatus.SENT] * len(addresses)
    return messages


# --- Amazon SES through SNS -------------------------------------------------------------------------


SES_SMTP_PASSWORD = "BPaX/Yq+9kEXAMPLEpassw0rd/x+"  # SES SMTP passwords are base64: "/" and "+" happen


def test_the_documented_ses_email_url_works_with_a_real_looking_smtp_password(monkeypatch: pytest.MonkeyPatch) -> None:
    step = doc_steps(doc_section("Setting up a provider: Amazon SES"))[1]
    name, _, url = the_span(step, r"EMAIL_URL=").partition("=")
    assert {"%2F", "%2B"} <= set(code_spans(step)), "the doc no longer says how to write / and + in the password"
    # given the URL written as the doc says: the password percent-encoded
    monkeypatch.setenv(name, fill(url, **{"SMTP user": "AKIAIOSFODNN7EXAMPLE", "SMTP password":
                                          quote(SES_SMTP_PASSWORD, safe=""), "region": "eu-west-1"}))
    config = env_email(name, "consolemail://")  # what config/settings.py does at start-up
    assert (config["EMAIL_HOST"], config["EMAIL_PORT"], config["EMAIL_USE_TLS"]) == (
        "email-smtp.eu-west-1.amazonaws.com", 587, True)
    assert (config["EMAIL_HOST_USER"], config["EMAIL_HOST_PASSWORD"]) == ("AKIAIOSFODNN7EXAMPLE", SES_SMTP_PASSWORD)
    # and written raw it is refused, as the doc warns: at start-up, and as a sender's Backend URL when saved
    raw = fill(url, **{"SMTP user": "AKIAIOSFODNN7EXAMPLE", "SMTP password": SES_SMTP_PASSWORD, "region": "eu-west-1"})
    monkeypatch.setenv(name, raw)
    with pytest.raises(ImproperlyConfigured, match=name):
        env_email(name, "consolemail://")
    with pytest.raises(ValidationError) as refused:
        SenderProfile(name="SES", from_email="news@leadflow.test",
                      email_url=raw.replace("smtp+tls", "smtp")).full_clean()
    assert "email_url" in refused.value.message_dict


def ses_notification(kind: str, message_id: str, address: str, key: str) -> dict[str, Any]:
    """An SES Bounce, Complaint or Delivery as SES publishes it, without "include original headers"
    (mail.headers absent): only SES's own message id names the message. `key`: notificationType
    (identity notifications) or eventType (a configuration set's event destination)."""
    mail = {"timestamp": "2026-12-03T10:00:00.000Z", "messageId": message_id, "source": "news@leadflow.test",
            "destination": [address]}
    body: dict[str, Any] = {key: kind, "mail": mail}
    if kind == "Bounce":
        body["bounce"] = {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": mail["timestamp"],
                          "feedbackId": "0100018c-bounce", "reportingMTA": "dns; email-smtp.amazonaws.com",
                          "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                                                 "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}
    elif kind == "Complaint":
        body["complaint"] = {"complainedRecipients": [{"emailAddress": address}], "timestamp": mail["timestamp"],
                             "feedbackId": "0100018c-complaint", "complaintFeedbackType": "abuse"}
    else:
        body["delivery"] = {"timestamp": mail["timestamp"], "processingTimeMillis": 546, "recipients": [address],
                            "smtpResponse": "250 ok: Message 64111812 accepted", "reportingMTA": "a8-70.smtp-out"}
    return body


@pytest.mark.parametrize("type_key", ["notificationType", "eventType"])
def test_amazon_ses_set_up_as_the_doc_says_gets_bounces_complaints_and_deliveries(
        live_server: Any, client: Client, role_users: dict[str, Any], template: Any, sink: smtpsink.SmtpSink,
        settings: Any, monkeypatch: pytest.MonkeyPatch, type_key: str) -> None:
    steps = doc_steps(doc_section("Setting up a provider: Amazon SES"))
    assert len(steps) == 6, "the SES steps changed: follow the new ones here"

    # 1. Sending: a sender profile's Backend URL at SES's SMTP interface (here the sink, which answers
    # "250 Ok <id>" as SES does); the URL syntax itself is the test above.
    assert "Backend URL" in steps[1]
    assert "250 Ok <id>" in code_spans(steps[1])
    sender = make_sender(sink.url)

    # 2. A key for the notifications, by the documented command
    key, _ = run_documented(the_span(steps[2], r"python manage\.py create_api_key"))
    key = key.strip()

    # 3. The SNS topic (Amazon's side): named as the doc names it, in step 4's ARN
    with FakeSns() as sns:
        settings.SNS_TEST_URL_PREFIX = sns.url_prefix  # the fake's loopback URLs stand in for sns.<region>...

        # 4. Allow the topic: the environment line, read as config/settings.py reads it
        name, _, arn = the_span(steps[4], r"SNS_TOPIC_ARNS=").partition("=")
        monkeypatch.setenv(name, fill(arn, region="us-east-1", account="123456789012"))
        settings.SNS_TOPIC_ARNS = topics = env_sns_topics(name, [])  # "then restart the web processes"
        [topic] = topics

        # 5. Subscribe: SNS posts to the documented endpoint, sending its user:password only after
        # Leadflow's Basic challenge (urllib's Basic handler behaves the same way)
        endpoint = urlsplit(fill(the_span(steps[5], r"https://"), key=key,
                                 **{"your host": urlsplit(live_server.url).netloc}))
        assert endpoint.scheme == "https"  # live_server speaks http; SNS sends credentials only over https
        url = f"{live_server.url}{endpoint.path}"
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, url, endpoint.username or "", endpoint.password or "")
        assert endpoint.username == "leadflow"
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))

        def sns_posts(envelope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            request = urllib.request.Request(url, data=json.dumps(envelope).encode(),  # noqa: S310  loopback
                                             headers={"Content-Type": "text/plain; charset=UTF-8"})
            with opener.open(request) as response:
                return response.status, json.loads(response.read())

        confirmation = sns.confirmation(topic=topic)
        assert sns_posts(confirmation)[0] == 200
        assert sns.confirmed == [confirmation["Token"]]  # "Leadflow confirms the subscription by itself"

        # 6. Check with SES's mailbox simulator: bounce@ twice (so only SES's id can say which one bounced)
        addresses = [span for span in code_spans(steps[6]) if span.endswith("@simulator.amazonses.com")]
        assert addresses == ["bounce@simulator.amazonses.com", "complaint@simulator.amazonses.com",
                             "success@simulator.amazonses.com"]
        bounce, complaint, success = addresses
        bounced, second, complained, delivered = send(sender, template, bounce, bounce, complaint, success)
        ses_id = {r.header("X-Leadflow-Message"): r.relay_id for r in sink.received}  # what SES answered
        for kind, message, version in [("Bounce", bounced, "1"), ("Complaint", complained, "2"),
                                       ("Delivery", delivered, "1")]:
            body = ses_notification(kind, ses_id[str(message.pk)], message.to_email, type_key)
            status, answer = sns_posts(sns.notification(body, topic=topic, version=version))
            assert status == 202, answer
            assert not answer.get("errors"), answer
            assert not answer.get("unknown"), answer

    # the bounced address appears under Suppressions and its message is bounced (not the other one)
    client.force_login(role_users["ops"])
    assert bounce in client.get("/admin/campaigns/suppression/").content.decode()
    assert Suppression.objects.get(email_hash=email_hash(bounce)).reason == SuppressionReason.HARD_BOUNCE
    assert Message.objects.get(pk=bounced.pk).status == MessageStatus.BOUNCED
    assert Message.objects.get(pk=second.pk).status == MessageStatus.SENT
    # the complaint suppresses its address (and withdraws consent); the success gets a delivered-at time
    assert Suppression.objects.get(email_hash=email_hash(complaint)).reason == SuppressionReason.COMPLAINT
    assert Contact.objects.get(email=complaint).consent_status == ConsentStatus.WITHDRAWN
    assert Message.objects.get(pk=delivered.pk).delivered_at is not None
    assert not Suppression.objects.filter(email_hash=email_hash(success)).exists()


# --- A plain SMTP relay with a bounce mailbox ----------------------------------------------------------


def test_a_plain_relay_with_a_bounce_mailbox_set_up_as_the_doc_says_gets_bounces_and_complaints(
        client: Client, role_users: dict[str, Any], template: Any, relay: smtpsink.SmtpSink, settings: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    steps = doc_steps(doc_section("Bounce mailbox (IMAP)"))
    assert len(steps) == 4, "the bounce mailbox steps changed: follow the new ones here"
    sender = make_sender(relay.url, reply_to="team@leadflow.test")

    with imap_server(tls="implicit") as imap:
        # 1. A mailbox for bounces: bounces go to the envelope sender, which is the From address; here
        # the From address is the mailbox (the doc's first option; no rewriting relay needed)
        assert "envelope sender" in steps[1]
        assert "*From* address" in steps[1]
        mailbox = sender.from_email
        imap.add_account(mailbox, IMAP_PASSWORD)

        # 2. The password in the workers' environment, under the documented name
        variable, _, value = the_span(steps[2], r"LEADFLOW_IMAP_\w+=").partition("=")
        assert value == "<password>"
        monkeypatch.setenv(variable, IMAP_PASSWORD)

        # 3. The sender profile's bounce mailbox fields, through the admin, exactly the ones the doc lists
        documented = table_first_column(steps[3])
        values = {"bounce_imap_host": "127.0.0.1", "bounce_imap_security": "tls", "bounce_imap_port": imap.port,
                  "bounce_imap_user": mailbox, "bounce_imap_password_env": variable, "bounce_imap_folder": "INBOX"}
        assert documented == list(values), f"the doc's fields are {documented}"
        assert "`tls` (implicit TLS, the default)" in steps[3]
        assert SenderProfile._meta.get_field("bounce_imap_security").default == "tls"
        assert "empty: 993 for `tls`, 143 otherwise" in steps[3]
        assert SECURITY_PORTS == {"tls": 993, "starttls": 143, "plain": 143}
        client.force_login(role_users["ops"])
        saved = admin_save(client, f"/admin/campaigns/senderprofile/{sender.pk}/change/", "senderprofile_form", values)
        assert saved.status_code == 302, saved.content.decode()[:3000]
        monkeypatch.setenv("SSL_CERT_FILE", imap.cert_file)  # "the certificate is verified": trust the test CA

        # a send through the relay (gone@ twice, so only the relay's queue id can say which one bounced)
        gone, kept = send(SenderProfile.objects.get(pk=sender.pk), template, "gone@example.com", "gone@example.com")
        first = next(r for r in relay.received if r.header("X-Leadflow-Message") == str(gone.pk))
        assert Message.objects.get(pk=gone.pk).relay_message_id == first.relay_id  # from "queued as <id>"
        # the relay returns the bounce to the envelope sender: that is the mailbox (else KeyError here)
        uid = imap.deliver(first.mail_from, postfix_dsn(first))

        # 4. Check: the documented command reads the mailbox once and prints what it held
        out, _ = run_documented(the_span(steps[4], r"python manage\.py bounces_poll"), name=sender.name)
        printed = the_span(steps[4], r"\.\.\. ").removeprefix("... ")
        assert printed in out, out

        gone.refresh_from_db()
        assert (gone.status, gone.reason) == (MessageStatus.BOUNCED, "hard_bounce")
        assert gone.last_error.startswith("5.1.1")  # with the Diagnostic-Code
        assert Message.objects.get(pk=kept.pk).status == MessageStatus.SENT
        assert Suppression.objects.get(email_hash=email_hash("gone@example.com")).reason == \
            SuppressionReason.HARD_BOUNCE
        assert "\\Seen" in next(m.flags for m in imap.messages(mailbox) if m.uid == uid)

        # "After that the scheduler polls every configured mailbox every 5 minutes": a feedback loop's
        # complaint (ARF) lands in the same mailbox and the scheduled job picks it up
        [(job, interval)] = scheduled("bounce_mailboxes_poll_job")
        assert "every 5 minutes" in steps[4]
        assert interval == 5 * 60
        [annoyed] = send(sender, template, "annoyed@example.com")
        imap.deliver(mailbox, sample("rfc5965_arf_abuse.eml", message_id=annoyed.provider_message_id,
                                     leadflow_id=annoyed.pk))
        assert job() == {sender.name: "1 processed, 0 ignored, 0 unparsed"}
    assert Suppression.objects.get(email_hash=email_hash("annoyed@example.com")).reason == SuppressionReason.COMPLAINT
    assert Contact.objects.get(email="annoyed@example.com").consent_status == ConsentStatus.WITHDRAWN


def scheduled(function_name: str) -> list[tuple[Any, int]]:
    """(function, interval in seconds) of each config/schedules.py entry running `function_name`."""
    import importlib

    from rq import cron

    from config import schedules

    cron._job_data_registry.clear()
    importlib.reload(schedules)
    return [(job["func"], job["interval"]) for job in cron._job_data_registry if job["func"].__name__ == function_name]
