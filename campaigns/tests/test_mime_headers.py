"""Header encoding of what delivery writes (issue 17, item 6): RFC 2047 encoded-words of at most 75
characters, folded so a line holding one stays within 76; IDNA (Punycode) hosts in addresses;
List-Unsubscribe never RFC 2047-encoded, its host in Punycode, folded only at commas; and no
List-Unsubscribe on transactional mail. Each message is parsed back with the email package."""

from __future__ import annotations

import email
import re
from email.header import decode_header, make_header
from email.policy import default as default_policy
from typing import Any

import pytest
from django.test import override_settings

from campaigns import mime
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageKind
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template

ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=")
LONG_NAME = "Ünïcödé Ëxträ Löng Sëndér Nämé — Mårketing Tëam of the Grüße & Café Department"
LONG_SUBJECT = "Willkommen, Zoë – 50 % Rabatt auf alles, nur heute: Grüße aus München und Köln " * 2


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=default_policy)


def raw_header(data: bytes, name: str) -> str:
    """The header as written (folded lines joined with their CRLF), None if absent."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    match = re.search(rf"^{name}:.*?(?=\r\n(?![ \t]))", head, flags=re.M | re.S | re.I)
    assert match, f"no {name} header"
    return match.group(0)


def build(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {"subject": "Hi", "from_name": "", "from_email": "news@example.com",
                              "to": "zoe@example.com", "reply_to": "", "text": "x", "html": "<p>x</p>",
                              "headers": {}}
    data = mime.build(**{**fields, **overrides})
    assert data is not None
    return data


def test_encoded_words_are_at_most_75_characters_and_lines_holding_them_at_most_76():
    data = build(from_name=LONG_NAME, subject=LONG_SUBJECT)

    for name in ("From", "Subject"):
        header = raw_header(data, name)
        words = ENCODED_WORD.findall(header)
        assert len(words) > 1  # long enough to need several
        assert max(len(w) for w in words) <= 75  # RFC 2047 section 2
        assert all(len(line) <= 76 for line in header.split("\r\n"))
        # Every word decodes on its own: none splits a UTF-8 character (RFC 2047 section 5).
        for word in words:
            [(raw, charset)] = decode_header(word)
            assert isinstance(raw, bytes)
            raw.decode(charset or "ascii")
    # Decoded as RFC 2047 section 6.2 says (white space between adjacent encoded-words is ignored;
    # the stdlib's newer address parser joins a phrase's words with a space instead, so the display
    # name is checked with the standard decoder).
    name = raw_header(data, "From")[len("From: "):].rpartition("<")[0].strip()
    assert str(make_header(decode_header(name))) == LONG_NAME
    parsed = parse(data)
    assert parsed["From"].addresses[0].addr_spec == "news@example.com"
    assert parsed["Subject"] == LONG_SUBJECT.strip()
    assert str(make_header(decode_header(raw_header(data, "Subject")[len("Subject: "):]))) == LONG_SUBJECT.strip()


def test_long_ascii_subjects_fold_at_spaces_without_encoding():
    subject = "An ASCII subject line that is long enough to need folding past seventy-eight characters " * 2
    data = build(subject=subject)
    header = raw_header(data, "Subject")
    assert "=?" not in header
    assert all(len(line) <= 78 for line in header.split("\r\n"))
    assert parse(data)["Subject"] == subject.strip()


def test_addresses_with_international_domains_are_written_in_punycode():
    data = build(from_name="Bücher", from_email="news@bücher.de", reply_to="hilfe@bücher.de", to="ann@xn--bcher-kva.de")

    assert data.split(b"\r\n\r\n", 1)[0].isascii()
    parsed = parse(data)
    assert parsed["From"].addresses[0].addr_spec == "news@xn--bcher-kva.de"
    assert parsed["From"].addresses[0].display_name == "Bücher"
    assert parsed["Reply-To"].addresses[0].addr_spec == "hilfe@xn--bcher-kva.de"


def test_list_unsubscribe_is_never_encoded_and_folds_at_commas():
    long_url = "https://bücher.example/e/u/" + "a" * 150 + "?ünï=1"
    value = mime.list_unsubscribe([long_url, "mailto:unsubscribe@bücher.example?subject=unsubscribe"])
    data = build(headers={"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})

    header = raw_header(data, "List-Unsubscribe")
    assert "=?" not in header
    assert header.isascii()
    lines = header.split("\r\n")
    assert len(lines) == 2  # folded once, after the comma between the two URLs
    assert lines[0].endswith(">,")
    assert lines[1].startswith(" <mailto:")
    urls = re.findall(r"<([^>]*)>", parse(data)["List-Unsubscribe"])
    assert urls == ["https://xn--bcher-kva.example/e/u/" + "a" * 150 + "?%C3%BCn%C3%AF=1",
                    "mailto:unsubscribe@xn--bcher-kva.example?subject=unsubscribe"]
    assert parse(data)["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_list_unsubscribe_refuses_a_value_that_would_need_encoding():
    with pytest.raises(ValueError, match="List-Unsubscribe must be ASCII"):
        build(headers={"List-Unsubscribe": "<https://bücher.example/e/u/1>"})


@override_settings(SITE_URL="https://bücher.example/" + "p" * 120)
def test_delivered_marketing_mail_has_a_plain_one_click_url_even_for_idn_and_long_site_urls(sender: Any, sink: Any):
    """The reported case: an IDN or very long SITE_URL made the writer RFC 2047-encode the header,
    which is no URL any more: one-click unsubscribe broke."""
    contact = make_contact("ann@example.com")
    messages_queue(template=make_template(), items=[QueueItem(contact.pk, "news:ann")])

    delivery_run_batch(sender=sender)

    [received] = sink.received
    header = raw_header(received.data, "List-Unsubscribe")
    assert "=?" not in header
    [url] = re.findall(r"<([^>]*)>", received.message["List-Unsubscribe"])
    message = Message.objects.get()
    assert url.startswith("https://xn--bcher-kva.example/" + "p" * 120 + "/e/u/")
    assert url.endswith(f"/e/u/{message.pk}:" + url.rsplit(":", 1)[1])
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_transactional_mail_has_no_list_unsubscribe(sender: Any, sink: Any):
    contact = make_contact("ann@example.com")
    receipt = make_template("receipt", kind=MessageKind.TRANSACTIONAL)
    news = make_template("news")
    messages_queue(template=receipt, items=[QueueItem(contact.pk, "receipt:ann")])
    messages_queue(template=news, items=[QueueItem(contact.pk, "news:ann")])

    delivery_run_batch(sender=sender)

    by_kind = {Message.objects.get(pk=int(r.header("X-Leadflow-Message"))).kind: r.message for r in sink.received}
    assert by_kind[MessageKind.TRANSACTIONAL]["List-Unsubscribe"] is None
    assert by_kind[MessageKind.TRANSACTIONAL]["List-Unsubscribe-Post"] is None
    assert by_kind[MessageKind.MARKETING]["List-Unsubscribe"]
    assert by_kind[MessageKind.MARKETING]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
