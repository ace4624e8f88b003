"""A template cannot tie up the server (issue 14, item 6): rendering has a deadline
(EMAIL_RENDER_MAX_MS) and an output cap (EMAIL_RENDER_MAX_CHARS), at save, preview and send.
Timing is not asserted: the limits are what guarantee it; the tests check each is refused with a
message that names the limit."""

from __future__ import annotations

import html as html_lib

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from campaigns.delivery import delivery_run_batch
from campaigns.models import EmailTemplate, Message, MessageStatus
from campaigns.rendering import SAMPLE_CONTACT, TemplateInvalid, render_context, render_parts
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template

pytestmark = pytest.mark.django_db

# The review's 868-byte template, in kind: five nested loops over a 36-item list (60 million
# iterations; the sandbox has no range, so the list is made from a literal with make_list).
NESTED_LOOPS = (
    '{% with L="abcdefghijklmnopqrstuvwxyz0123456789"|make_list %}'
    "{% for a in L %}{% for b in L %}{% for c in L %}{% for d in L %}{% for e in L %}"
    "{{ a }}{{ e }}"
    "{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endwith %}"
)
TIME_LIMIT = "EMAIL_RENDER_MAX_MS"
SIZE_LIMIT = "EMAIL_RENDER_MAX_CHARS"

OVERSIZED = {
    # one loop, each iteration small: the output adds up
    "loop output": '{% with L="abcdefghijklmnopqrstuvwxyz0123456789"|make_list %}{% for a in L %}{% for b in L %}'
                   '{% for c in L %}<p>{{ a }}{{ b }}{{ c }} ' + "x" * 2000 + "</p>"
                   "{% endfor %}{% endfor %}{% endfor %}{% endwith %}",
    "padding filter": '{{ contact.first_name|ljust:"999999999" }}',
    "centre": '{{ contact.first_name|center:"5000000" }}',
    "format width": '{{ contact.score|stringformat:"0999999999d" }}',
    "doubling add": '{% with a="xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" %}' + "{% with a=a|add:a %}" * 30
                    + "{{ a }}" + "{% endwith %}" * 31,
    "join": '{% with L="abcdefghijklmnopqrstuvwxyz0123456789"|make_list %}'
            '{% with s=contact.first_name|ljust:"900000" %}{{ L|join:s }}{% endwith %}{% endwith %}',
    "lorem": "{% lorem 99999999 w %}",
}


def test_nested_loops_are_refused_at_save_naming_the_limit() -> None:
    template = EmailTemplate(key="bomb", subject="Hi", html=NESTED_LOOPS)
    with pytest.raises(ValidationError) as refused:
        template.full_clean()
    [message] = refused.value.message_dict["html"]
    assert message.startswith("html: rendering stopped after 0.5 s")
    assert TIME_LIMIT in message


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_oversized_output_is_refused_at_save_naming_the_limit(name: str) -> None:
    template = EmailTemplate(key="big", subject="Hi", html=OVERSIZED[name])
    with pytest.raises(ValidationError) as refused:
        template.full_clean()
    assert SIZE_LIMIT in refused.value.message_dict["html"][0]


def test_a_huge_floatformat_precision_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        EmailTemplate(key="digits", subject="Hi", html="{{ 3.14|floatformat:'999999' }}").full_clean()
    assert "floatformat: at most 100 decimal places" in refused.value.message_dict["html"][0]


def test_the_subject_and_body_share_one_budget() -> None:
    half = '{{ contact.first_name|ljust:"600000" }}'
    context = render_context(contact=SAMPLE_CONTACT, attributes={}, extra={})
    render_parts(subject="Hi", html=half, text="", context=context)  # 600k alone is fine
    with pytest.raises(TemplateInvalid, match=SIZE_LIMIT):
        render_parts(subject="Hi", html=half, text=half, context=context)


def test_ordinary_templates_with_loops_and_filters_still_render() -> None:
    source = ('{% with L="abc"|make_list %}{% for a in L %}{% for b in L %}{{ a }}{{ b }} {% endfor %}{% endfor %}'
              '{% endwith %}{{ contact.first_name|ljust:"10" }}|{{ 3.14159|floatformat:2 }}|'
              '{{ "a,b"|add:",c" }}|{% lorem 3 w %}')
    context = render_context(contact=SAMPLE_CONTACT, attributes={}, extra={})
    out = render_parts(subject="Hi", html=source, text="", context=context).html
    assert out.startswith("aa ab ac ba bb bc ca cb cc Ada       |3.14|a,b,c|lorem ipsum dolor")


def _stored_bomb() -> EmailTemplate:
    """A template saved before the limits existed (no validation on a direct save)."""
    template = make_template("bomb", html="<p>fine</p>")
    EmailTemplate.objects.filter(pk=template.pk).update(html=NESTED_LOOPS)
    template.refresh_from_db()
    return template


def test_the_admin_preview_shows_the_limit_instead_of_hanging(client: Client, role_users, sender) -> None:  # noqa: ANN001
    template = _stored_bomb()
    client.force_login(role_users["marketer"])
    page = client.get(f"/admin/campaigns/emailtemplate/{template.pk}/preview/")
    assert page.status_code == 200
    text = html_lib.unescape(page.content.decode())
    assert "rendering stopped after 0.5 s" in text
    assert TIME_LIMIT in text


def test_a_send_that_exceeds_the_limit_fails_permanently_with_the_reason(sender, sink) -> None:  # noqa: ANN001
    template = _stored_bomb()
    messages_queue(template=template, items=[QueueItem(make_contact("a@example.com").pk, "bomb:1")])
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    assert (message.status, message.reason) == (MessageStatus.FAILED, "render_error")  # not retried
    assert TIME_LIMIT in message.last_error
    assert message.last_error.startswith("html: rendering stopped after 0.5 s")
    assert sink.received == []
