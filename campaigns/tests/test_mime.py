"""The lean MIME writer produces what a standard parser reads back exactly."""

from __future__ import annotations

import email
from email.policy import default as default_policy

from campaigns import mime


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=default_policy)


def test_headers_and_both_parts_round_trip_including_non_ascii_and_long_lines():
    text = "Grüße, Zoë!\n.a line that starts with a dot\nFrom the top\n" + "x" * 2000 + "\n"
    html = "<p>Grüße</p>\n<p>" + "<a href='https://example.com/very/long'>link</a> " * 80 + "</p>"
    data = mime.build(subject="Willkommen, Zoë – 50 % off", from_name="Café Leadflow", from_email="news@example.com",
                      to="zoe@example.com", reply_to="help@example.com", text=text, html=html,
                      headers={"Message-ID": "<1.2@example.com>", "X-Leadflow-Message": "7",
                               "List-Unsubscribe": "<https://example.com/e/u/7:sig>",
                               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    assert data is not None
    assert max(len(line) for line in data.split(b"\r\n")) <= 998  # SMTP's line limit
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    parsed = parse(data)
    assert parsed["Subject"] == "Willkommen, Zoë – 50 % off"
    assert parsed["From"].addresses[0].display_name == "Café Leadflow"
    assert parsed["From"].addresses[0].addr_spec == "news@example.com"
    assert parsed["To"] == "zoe@example.com"
    assert parsed["Reply-To"] == "help@example.com"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"] == "<1.2@example.com>"
    assert parsed["Date"]
    plain = parsed.get_body(preferencelist=("plain",))
    rich = parsed.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n").rstrip("\n") == html


def test_newlines_in_header_values_cannot_inject_headers():
    data = mime.build(subject="Hi\r\nBcc: victim@example.com", from_name="", from_email="a@example.com",
                      to="b@example.com", reply_to="", text="x", html="<p>x</p>", headers={})
    assert data is not None
    parsed = parse(data)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Hi Bcc: victim@example.com"


def test_a_non_ascii_address_is_left_to_the_full_builder():
    assert mime.build(subject="s", from_name="", from_email="a@example.com", to="zoë@exämple.com", reply_to="",
                      text="x", html="x", headers={}) is None
