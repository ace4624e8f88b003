"""Approval like workflows': a test send to the test audience first; above
BROADCAST_APPROVAL_THRESHOLD contacts only an Approver approves; what was approved is what is sent
(an edit voids the approval). Checked in the services and through the admin's action view."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client

from broadcasts.models import Broadcast, BroadcastStatus, BroadcastVariant
from broadcasts.services import broadcast_approve, broadcast_save, broadcast_send, broadcast_send_test
from broadcasts.tests.conftest import STAGING, approve, make_broadcast, make_contacts
from campaigns.models import EmailTemplate, Message, MessageKind
from contacts.models import Segment, SegmentMembership

pytestmark = pytest.mark.django_db


def test_a_test_send_goes_to_the_staging_recipient_first_and_approval_needs_it(staged_sender, tester, role_users):
    broadcast = make_broadcast(staged_sender, make_contacts(3))
    with pytest.raises(ValidationError, match="Send a test to the test audience first"):
        broadcast_approve(broadcast=broadcast, actor=role_users["marketer"])
    [message_id] = broadcast_send_test(broadcast=broadcast, actor=role_users["marketer"])
    message = Message.objects.get(pk=message_id)
    assert (message.contact_id, message.redirect_to, message.is_test) == (tester.pk, STAGING, True)
    assert message.kind == MessageKind.TRANSACTIONAL
    assert message.revision_id == broadcast.variants.get().revision_id
    broadcast_approve(broadcast=broadcast, actor=role_users["marketer"])
    assert (broadcast.status, broadcast.approved_count, broadcast.approved_by) == (
        BroadcastStatus.APPROVED, 3, role_users["marketer"])
    assert broadcast.approved_definition["variants"][0]["revision"] == message.revision_id


def test_without_a_test_audience_or_staging_recipient_the_test_send_says_what_is_missing(sender, staged_sender):
    broadcast = make_broadcast(staged_sender, make_contacts(2))
    with pytest.raises(ValidationError, match="There is no test audience"):
        broadcast_send_test(broadcast=broadcast, actor=None)


def test_above_the_threshold_only_an_approver_approves(staged_sender, tester, role_users, settings):
    settings.BROADCAST_APPROVAL_THRESHOLD = 5
    big = make_broadcast(staged_sender, make_contacts(6))
    broadcast_send_test(broadcast=big, actor=role_users["marketer"])
    with pytest.raises(PermissionDenied, match="6 contacts is more than 5 .* an Approver must approve"):
        broadcast_approve(broadcast=big, actor=role_users["marketer"])
    for outsider in ("ops", "sales", "outsider"):
        with pytest.raises(PermissionDenied):
            broadcast_approve(broadcast=big, actor=role_users[outsider])
    broadcast_approve(broadcast=big, actor=role_users["approver"])
    assert big.status == BroadcastStatus.APPROVED
    # at or below the threshold a marketer may
    small = make_broadcast(staged_sender, make_contacts(5, "s"), key="small")
    approve(small, role_users["marketer"])
    assert small.status == BroadcastStatus.APPROVED


def test_an_edit_after_approval_voids_it_and_nothing_unapproved_is_sent(staged_sender, tester, role_users):
    broadcast = approve(make_broadcast(staged_sender, make_contacts(3)))
    # the template's working copy changes and the broadcast is saved again: a new revision is pinned
    EmailTemplate.objects.filter(key="news").update(subject="Changed subject")
    broadcast_save(broadcast=broadcast, actor=role_users["marketer"])
    assert broadcast.status == BroadcastStatus.DRAFT
    assert "Changed after its approval" in broadcast.status_message
    with pytest.raises(ValidationError, match="it is a draft: send a test and approve it first"):
        broadcast_send(broadcast=broadcast, actor=None)
    # a template edit alone (no save of the broadcast) changes nothing: the approved revision is pinned
    approved = approve(make_broadcast(staged_sender, make_contacts(2, "p"), key="pinned"))
    EmailTemplate.objects.filter(key="news").update(subject="Edited again")
    broadcast_send(broadcast=approved, actor=None)
    revision = BroadcastVariant.objects.get(broadcast=approved).revision
    assert revision is not None
    assert revision.subject == "Changed subject"


def test_a_segment_changed_after_approval_stops_the_send(staged_sender, tester):
    contacts = make_contacts(2)
    segment = Segment.objects.create(name="Germans", definition={"field": "country", "op": "eq", "value": "DE"})
    SegmentMembership.objects.bulk_create([SegmentMembership(segment=segment, contact=c) for c in contacts])
    broadcast = make_broadcast(staged_sender, [])
    broadcast.segments.add(segment)
    approve(broadcast_save(broadcast=broadcast, actor=None))
    Segment.objects.filter(pk=segment.pk).update(definition={"field": "country", "op": "eq", "value": "FR"})
    with pytest.raises(ValidationError, match="changed since its approval"):
        broadcast_send(broadcast=broadcast, actor=None)
    assert not Message.objects.filter(source="broadcast:news").exists()


def _act(client: Client, broadcast: Broadcast, action: str, **data: str) -> str:
    response = client.post(f"/admin/broadcasts/broadcast/{broadcast.pk}/act/", {"action": action, **data},
                           follow=True)
    assert response.status_code == 200
    return " ".join(str(m) for m in response.context["messages"])


def test_the_admin_actions_check_permissions_on_the_server(staged_sender, tester, role_users, settings):
    settings.BROADCAST_APPROVAL_THRESHOLD = 2
    broadcast = make_broadcast(staged_sender, make_contacts(3))
    marketer, approver, ops = Client(), Client(), Client()
    marketer.force_login(role_users["marketer"])
    approver.force_login(role_users["approver"])
    ops.force_login(role_users["ops"])
    # Ops may watch, not act
    assert ops.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/change/").status_code == 200
    assert ops.post(f"/admin/broadcasts/broadcast/{broadcast.pk}/act/", {"action": "test"}).status_code == 403
    assert "Test sent: 1 message(s) to qa@leadflow.test" in _act(marketer, broadcast, "test")
    assert "an Approver must approve" in _act(marketer, broadcast, "approve")
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.DRAFT
    assert "Approved for 3 contacts" in _act(approver, broadcast, "approve")
    assert "Sending to 3 contacts" in _act(marketer, broadcast, "send")
    page = marketer.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/change/").content.decode()
    assert 'role="progressbar"' in page
    assert "0 sent, 0 failed" in page
    assert "3 not queued yet, of 3" in page
    assert "Paused: 0 queued message(s) held" in _act(marketer, broadcast, "pause")
    assert "unknown action" in _act(marketer, broadcast, "explode")
