"""The outbox in the admin, as a marketer or ops user reads it (issue 19)."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact

pytestmark = pytest.mark.django_db


def test_retry_from_a_list_filtered_by_status_reports_no_negative_skips(client: Client, role_users, sender,  # noqa: ANN001
                                                                        template) -> None:  # noqa: ANN001
    message_id = messages_queue(template=template, items=[QueueItem(make_contact("x@example.com").pk, "k")])[0]
    Message.objects.filter(pk=message_id).update(status=MessageStatus.FAILED, reason="rejected")
    client.force_login(role_users["ops"])
    response = client.post("/admin/campaigns/message/?status__exact=failed",
                           {"action": "retry_messages", "_selected_action": [message_id]})
    assert response.status_code == 302
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert notes == ["1 message(s) queued again."]


def test_a_message_page_shows_the_email_in_a_sandboxed_frame_not_its_raw_html(client: Client, role_users,  # noqa: ANN001
                                                                              sender, template) -> None:  # noqa: ANN001
    message_id = messages_queue(template=template, items=[QueueItem(make_contact("x@example.com").pk, "k")])[0]
    Message.objects.filter(pk=message_id).update(
        html='<p id="greeting">Hello <b>Ann</b></p><img src="https://leadflow.test/e/o/1.gif"><script>x()</script>')
    client.force_login(role_users["marketer"])
    page = client.get(f"/admin/campaigns/message/{message_id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    frame = html[html.index('<iframe id="message-html"'):html.index("</iframe>")]
    assert 'sandbox=""' in frame  # no scripts, no forms, no same-origin access
    # The CSP inside the frame: nothing loads from outside, so viewing records no open.
    assert "Content-Security-Policy" in frame
    assert "img-src data:" in frame
    assert "&lt;p id=&quot;greeting&quot;&gt;Hello &lt;b&gt;Ann&lt;/b&gt;" in frame  # srcdoc, attribute-escaped
    # The raw HTML is only the collapsed source view, not the field itself.
    assert html.count("&lt;p id=&quot;greeting&quot;&gt;") == 2
    assert "<details><summary>HTML source</summary>" in html


def test_template_preview_picks_a_contact_by_search_and_an_unknown_one_is_an_error(client: Client, role_users,  # noqa: ANN001
                                                                                   sender) -> None:  # noqa: ANN001
    from campaigns.models import EmailTemplate

    template = EmailTemplate.objects.create(key="hello", subject="Hello {{ contact.first_name }}", html="<p>Hi</p>")
    grace = make_contact("grace@example.com", first_name="Grace")
    client.force_login(role_users["marketer"])
    url = f"/admin/campaigns/emailtemplate/{template.pk}/preview/"
    form = client.get(url).content.decode()
    assert 'data-ajax--url="/admin/autocomplete/"' in form  # searched by email or name, not typed as an id
    # The search behind the picker finds the contact by email.
    found = client.get("/admin/autocomplete/", {"term": "grace@", "app_label": "campaigns",
                                                "model_name": "message", "field_name": "contact"})
    assert found.json()["results"] == [{"id": str(grace.pk), "text": str(grace)}]

    page = client.post(url, {"contact": grace.pk + 1000, "action": "preview"}).content.decode()
    assert "No contact with that id" in page
    assert "Subject: Hello" not in page  # no silent sample preview
    page = client.post(url, {"contact": grace.pk, "action": "preview"}).content.decode()
    assert "Subject: Hello Grace" in page
    assert 'sandbox=""' in page
