"""Templates: sandboxed rendering, errors at save time, derived text, layout, admin preview."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from campaigns import rendering
from campaigns.models import EmailTemplate, Message
from campaigns.services import message_preview
from campaigns.tests.conftest import make_contact

pytestmark = pytest.mark.django_db


def test_personalisation_uses_fields_attributes_and_defaults():
    context = rendering.render_context(contact={"first_name": ""}, attributes={"plan": "pro"}, extra={})
    parts = rendering.render_parts(subject="Hi {{ contact.first_name|default:'there' }}",
                                   html="<p>Plan {{ attributes.plan }}, {{ attributes.missing|default:'n/a' }}</p>",
                                   text="", context=context)
    assert parts.subject == "Hi there"
    assert parts.html == "<p>Plan pro, n/a</p>"
    assert parts.text == "Plan pro, n/a\n"  # derived from the HTML


def test_values_are_autoescaped_in_html_and_subjects_cannot_inject_headers():
    context = rendering.render_context(contact={"first_name": "<script>x</script>\nBcc: a@b.c"}, attributes={},
                                       extra={})
    parts = rendering.render_parts(subject="Hi {{ contact.first_name }}", html="<p>{{ contact.first_name }}</p>",
                                   text="", context=context)
    assert "<script>" not in parts.html
    assert "&lt;script&gt;" in parts.html
    assert "\n" not in parts.subject


@pytest.mark.parametrize(("html", "expected"), [
    ("{% load static %}", "html"),
    ("{% include 'admin/base.html' %}", "html"),
    ("{% debug %}", "debug"),
    ("{% if %}", "html"),
    ("{{ contact.first_name|nosuchfilter }}", "nosuchfilter"),
])
def test_templates_that_escape_the_sandbox_or_do_not_compile_are_refused(html: str, expected: str):
    with pytest.raises(rendering.TemplateInvalid, match=expected):
        rendering.template_validate(subject="s", html=html)


def test_a_broken_template_is_an_error_at_save_time_on_the_right_field():
    template = EmailTemplate(key="bad", subject="Hi {% if %}", html="<p>ok</p>")
    with pytest.raises(ValidationError) as info:
        template.full_clean()
    assert "subject" in info.value.message_dict


def test_the_model_instance_never_reaches_the_template(sender):  # noqa: ANN001
    contact = make_contact("who@example.com", first_name="Ada")
    # A model would allow {{ contact.owner.password }} or method calls; plain data has no such keys.
    template = EmailTemplate.objects.create(key="probe", subject="x",
                                            html="[{{ contact.owner.password }}][{{ contact.save }}][{{ contact.pk }}]")
    preview = message_preview(template=template, contact=contact)
    assert "[][][]" in preview.html


def test_the_preview_wraps_the_layout_tracks_links_and_keeps_mailto(sender):  # noqa: ANN001
    contact = make_contact("who@example.com", first_name="Ada")
    template = EmailTemplate.objects.create(
        key="links", subject="Hi", html='<a href="https://a.example/x?y=1&amp;z=2">A</a> <a href="mailto:x@y.z">M</a>')
    preview = message_preview(template=template, contact=contact)
    assert preview.links == ["https://a.example/x?y=1&z=2"]
    assert "mailto:x@y.z" in preview.html
    assert "/e/c/" in preview.html
    assert "Unsubscribe" in preview.html
    assert "1 Example Street" in preview.html
    assert "Unsubscribe: " in preview.text
    assert not Message.objects.exists()  # a preview saves nothing


def test_admin_preview_and_send_test(client, role_users, sender, sink):  # noqa: ANN001
    from campaigns.delivery import delivery_run_batch

    template = EmailTemplate.objects.create(key="hello", subject="Hello {{ contact.first_name }}", html="<p>Hi</p>")
    contact = make_contact("lead@example.com", first_name="Grace")
    client.force_login(role_users["marketer"])
    url = f"/admin/campaigns/emailtemplate/{template.pk}/preview/"
    page = client.get(url)
    assert page.status_code == 200
    assert b"Subject: Hello Ada" in page.content  # the sample contact
    page = client.post(url, {"contact": contact.pk, "action": "preview"})
    assert b"Subject: Hello Grace" in page.content
    response = client.post(url, {"contact": contact.pk, "send_test_to": "me@leadflow.test", "action": "send_test"})
    assert response.status_code == 302
    delivery_run_batch(sender=sender)
    [received] = sink.received
    assert received.rcpt_tos == ["me@leadflow.test"]
    assert received.header("Subject") == "[TEST] Hello Grace"
