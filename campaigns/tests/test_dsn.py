"""Reading bounce mailbox mail (issue 17 item 3): RFC 3464 delivery status notifications and RFC 5965
feedback reports, on samples modelled on Postfix, Gmail, Exchange and the RFCs' own examples
(campaigns/tests/dsn_samples/README.md names each one's source)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import dsn

SAMPLES = Path(__file__).parent / "dsn_samples"


def sample(name: str, *, message_id: str = "<m1@leadflow.test>", leadflow_id: int = 42) -> bytes:
    raw = (SAMPLES / name).read_bytes()
    return raw.replace(b"@@MESSAGE_ID@@", message_id.encode()).replace(b"@@LEADFLOW_ID@@", str(leadflow_id).encode())


@pytest.mark.parametrize(("name", "address", "status"), [
    ("postfix_hard_5_1_1.eml", "gone@example.com", "5.1.1"),
    ("gmail_hard_5_1_1.eml", "nobody.here@gmail.com", "5.1.1"),
    ("exchange_hard_5_1_10.eml", "former.employee@contoso.example", "5.1.10"),
])
def test_a_failed_recipient_with_a_5xx_status_is_a_hard_bounce(name: str, address: str, status: str) -> None:
    report = dsn.parse(sample(name))
    assert report.kind == dsn.BOUNCE
    [recipient] = report.recipients
    assert (recipient.email, recipient.kind, recipient.status, recipient.action) == (address, "hard", status, "failed")
    assert recipient.detail.startswith(status)
    assert "550" in recipient.detail  # the server's words kept
    assert report.message_id == "<m1@leadflow.test>"  # from the returned message (Gmail: also its own field)


def test_postfix_names_its_queue_id_and_the_returned_headers_carry_ours() -> None:
    report = dsn.parse(sample("postfix_hard_5_1_1.eml"))
    assert report.relay_id == "4B1A2C0E5F"  # what "250 2.0.0 Ok: queued as 4B1A2C0E5F" answered
    assert report.leadflow_id == 42


def test_a_delay_and_a_failure_with_a_4xx_status_are_soft() -> None:
    delayed = dsn.parse(sample("postfix_delayed_4_4_1.eml"))
    assert [(r.email, r.kind, r.action, r.status) for r in delayed.recipients] == [
        ("slow@example.net", "soft", "delayed", "4.4.1")]
    # RFC 3464 9.1's example: the MTA gave up after days of timeouts (failed, 4.0.0). The address may
    # be fine; the other recipient of the same DSN was delivered and is only noted.
    gave_up = dsn.parse(sample("rfc3464_soft_failed_4_0_0.eml"))
    assert [(r.email, r.kind, r.status) for r in gave_up.recipients] == [("away@example.org", "soft", "4.0.0")]
    assert gave_up.notes == ("landed@example.org: delivered",)


def test_an_arf_abuse_report_is_a_complaint_about_its_original_recipient() -> None:
    report = dsn.parse(sample("rfc5965_arf_abuse.eml"))
    assert report.kind == dsn.COMPLAINT
    assert [(r.email, r.kind) for r in report.recipients] == [("annoyed@example.com", "complaint")]
    assert (report.message_id, report.leadflow_id) == ("<m1@leadflow.test>", 42)


def test_a_redacted_arf_report_still_carries_our_headers() -> None:
    report = dsn.parse(sample("arf_abuse_redacted.eml", message_id="<m9@leadflow.test>", leadflow_id=9))
    assert report.kind == dsn.COMPLAINT
    assert (report.message_id, report.leadflow_id) == ("<m9@leadflow.test>", 9)


def test_an_out_of_office_reply_is_ignored_with_the_reason() -> None:
    report = dsn.parse(sample("out_of_office.eml"))
    assert report.kind == dsn.IGNORED
    assert report.reason == "automatic reply (Auto-Submitted: auto-replied)"


def test_a_dsn_without_recipients_is_unparsed_with_the_rfc_section() -> None:
    with pytest.raises(dsn.Unparsed, match=r"names no recipient \(RFC 3464 section 2.1\)"):
        dsn.parse(sample("malformed_no_recipient.eml"))


def test_a_bad_status_code_names_the_recipient_and_the_value() -> None:
    raw = sample("postfix_hard_5_1_1.eml").replace(b"Status: 5.1.1", b"Status: five-one-one")
    with pytest.raises(dsn.Unparsed, match=r"recipient 1: Status 'five-one-one' is not a status code"):
        dsn.parse(raw)


def test_a_plain_human_mail_is_unparsed() -> None:
    with pytest.raises(dsn.Unparsed, match="no multipart/report"):
        dsn.parse(b"From: someone@example.com\r\nSubject: hello\r\n\r\nplease remove me\r\n")


def test_the_key_is_the_mails_message_id_else_a_hash_of_its_bytes() -> None:
    assert dsn.report_key(sample("postfix_hard_5_1_1.eml")) == "<20261201091244.8F2D10A6E@relay.leadflow.test>"
    assert dsn.report_key(b"Subject: x\r\n\r\nbody").startswith("sha256:")


def storable(report: dsn.Report) -> bool:
    """Every text the poller stores is printable (PostgreSQL refuses NUL in text and JSON)."""
    texts = [report.message_id, report.relay_id, report.reason, *report.notes]
    texts += [t for r in report.recipients for t in (r.email, r.detail, r.status, r.action)]
    return all(t.isprintable() for t in texts)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_parse_or_are_unparsed_never_an_exception(raw: bytes) -> None:
    try:
        assert storable(dsn.parse(raw))
    except dsn.Unparsed:
        pass
    assert dsn.report_key(raw).isprintable()
    assert dsn.subject_of(raw).isprintable()


def test_control_characters_in_a_report_never_reach_what_is_stored() -> None:
    raw = sample("rfc5965_arf_abuse.eml").replace(b"Original-Rcpt-To: <annoyed@example.com>",
                                                  b"Original-Rcpt-To: <ann\x00oyed@example.com>")
    raw = raw.replace(b"Feedback-Type: abuse", b"Feedback-Type: abuse\x00")
    report = dsn.parse(raw)
    assert storable(report)
    # "ann oyed@..." is no address: the reported message's To names the recipient instead
    assert [r.email for r in report.recipients] == ["annoyed@example.com"]
    assert report.message_id == "<m1@leadflow.test>"


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(p.name for p in SAMPLES.glob("*.eml"))), st.integers(0, 4000), st.binary(max_size=40))
def test_damaged_samples_parse_or_are_unparsed(name: str, at: int, junk: bytes) -> None:
    raw = sample(name)
    damaged = raw[:at] + junk + raw[at + len(junk):]
    try:
        assert storable(dsn.parse(damaged))
    except dsn.Unparsed:
        pass
