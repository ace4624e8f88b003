"""Who may do what with delivery: marketers write templates, ops run senders and retries,
sales sees none of it."""

from __future__ import annotations

import pytest
from django.test import Client

from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("role", "path", "allowed"), [
    ("marketer", "/admin/campaigns/emailtemplate/add/", True),
    ("marketer", "/admin/campaigns/senderprofile/add/", False),
    ("marketer", "/admin/campaigns/message/", True),
    ("ops", "/admin/campaigns/senderprofile/add/", True),
    ("ops", "/admin/campaigns/emailtemplate/add/", False),
    ("ops", "/admin/campaigns/suppression/add/", True),
    ("sales", "/admin/campaigns/message/", False),
    ("sales", "/admin/campaigns/emailtemplate/", False),
    ("outsider", "/admin/campaigns/message/", False),
])
def test_admin_pages_by_role(client: Client, role_users, role: str, path: str, allowed: bool):  # noqa: ANN001
    client.force_login(role_users[role])
    assert (client.get(path).status_code == 200) is allowed


def test_only_roles_with_the_retry_permission_can_retry(client: Client, role_users, sender, template):  # noqa: ANN001
    message_id = messages_queue(template=template, items=[QueueItem(make_contact("x@example.com").pk, "k")])[0]
    Message.objects.filter(pk=message_id).update(status=MessageStatus.FAILED, reason="rejected")
    data = {"action": "retry_messages", "_selected_action": [message_id]}
    client.force_login(role_users["marketer"])
    client.post("/admin/campaigns/message/", data)
    assert Message.objects.get().status == MessageStatus.FAILED  # the action is not offered to marketers
    client.force_login(role_users["ops"])
    response = client.post("/admin/campaigns/message/", data)
    assert response.status_code == 302
    assert Message.objects.get().status == MessageStatus.QUEUED


def test_messages_cannot_be_edited_or_deleted_in_the_admin(client: Client, role_users, sender, template):  # noqa: ANN001
    message_id = messages_queue(template=template, items=[QueueItem(make_contact("x@example.com").pk, "k")])[0]
    client.force_login(role_users["admin"])
    page = client.get(f"/admin/campaigns/message/{message_id}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.post(f"/admin/campaigns/message/{message_id}/delete/", {"post": "yes"}).status_code == 403
    assert Message.objects.filter(pk=message_id).exists()
