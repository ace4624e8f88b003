"""Issue 15, items 2 and 3: the versioning screen shows what customers would receive differently
(template revisions, rendered and as a text diff), after a promotion what it replaced, where a
rollback goes; approval covers content (a template revision's author is a first person too);
promote, rollback and pause ask first; kill switches need a reason."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client

from automation import services
from automation.models import Workflow
from automation.tests.conftest import advance, deploy, emit, make_contact
from automation.tests.test_content_versions import DRAFT, OLD, pricing_file
from campaigns.models import EmailTemplate
from conftest import make_user
from core import roles
from core.models import AuditEntry, Switch

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def flat(html: str) -> str:
    return " ".join(html.split())


def versions_page(client: Client, workflow: Workflow) -> str:
    response = client.get(f"/admin/automation/workflow/{workflow.pk}/versions/")
    assert response.status_code == 200
    return response.content.decode()


def test_a_version_whose_only_change_is_the_email_shows_that_change(role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    services.workflow_import(text=pricing_file(DRAFT), actor="test", to="staging")
    page = versions_page(client_for(role_users["approver"]), workflow)
    # the step is not "same": its content changed
    assert '<tr class="diff-changed"><td>followup</td><td>changed</td>\n<td>content</td>' in page
    # the template diff names both revisions, both subjects, renders both and diffs the text
    assert '<tr class="diff-changed" data-template="pricing-followup">' in page
    assert "pricing-followup r1" in page
    assert "pricing-followup r2" in page
    assert "-Our pricing, {{ contact.first_name }}" in page
    assert f"+{DRAFT}" in page
    assert "Subject: Our pricing, Ada" in page  # rendered for the sample contact
    assert f"Subject: {DRAFT}" in page
    assert page.count("<iframe sandbox") == 2  # the rendered bodies cannot run scripts in the admin


def test_after_a_promotion_the_screen_compares_with_what_it_replaced_and_rollback_says_where_it_goes(
        role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    services.workflow_import(text=pricing_file(DRAFT), actor="test", to="staging")
    services.workflow_promote(workflow=workflow, actor=role_users["approver"])
    page = versions_page(client_for(role_users["approver"]), workflow)
    assert "Last promotion: v1 → production v2 (which replaced it" in page
    assert '<tr class="diff-changed" data-template="pricing-followup">' in page
    assert "<code>pricing-followup</code> back to pricing-followup r1 “Our pricing, {{ contact.first_name }}”" in page
    assert f"(now pricing-followup r2 “{DRAFT}”)" in page
    assert 'value="Roll back to v1"' in page


def test_the_author_of_a_changed_template_revision_cannot_promote_it(role_users, settings) -> None:
    settings.WORKFLOW_PROMOTE_SECOND_PERSON = True
    approver, marketer = role_users["approver"], role_users["marketer"]
    workflow = deploy(pricing_file(OLD))
    # the approver edits the email in the admin (revision r2 is theirs); a marketer drafts and stages it
    template = EmailTemplate.objects.get(key="pricing-followup")
    client_for(approver).post(f"/admin/campaigns/emailtemplate/{template.pk}/change/", {
        "key": template.key, "name": "", "kind": "marketing", "subject": DRAFT, "html": template.html, "text": ""})
    draft = services.version_draft_with_latest_templates(workflow=workflow, actor=marketer)
    services.workflow_stage(version=draft, actor=marketer)
    # the version's author is the marketer, but the content is the approver's: they cannot promote it
    assert draft.author == marketer
    with pytest.raises(PermissionDenied, match="author of pricing-followup r2"):
        services.workflow_promote(workflow=workflow, actor=approver)
    page = versions_page(client_for(approver), workflow)
    assert "a different person than the author of pricing-followup r2 must promote" in page
    # a second approver can
    services.workflow_promote(workflow=workflow, actor=make_user("approver2", roles.APPROVER))
    assert workflow.versions.get(state="production") == draft


def test_an_unchanged_revision_written_by_the_promoter_does_not_block_them(role_users, settings) -> None:
    settings.WORKFLOW_PROMOTE_SECOND_PERSON = True
    approver = role_users["approver"]
    workflow = deploy(pricing_file(OLD), actor=approver)  # r1 is the approver's, and in production
    services.workflow_import(text=pricing_file(OLD).replace("always", "once"), actor=role_users["marketer"],
                             to="staging")
    assert services.can_promote(actor=approver, version=workflow.versions.get(state="staging")) == ""


def test_promote_rollback_and_pause_ask_first_showing_changes_and_contacts_in_flight(role_users, sender) -> None:
    approver = client_for(role_users["approver"])
    workflow = deploy(pricing_file(OLD).replace("steps:\n", "steps:\n  - {id: wait, type: wait, duration: 1d}\n"))
    emit(make_contact("inflight@example.com"), "pricing_viewed")
    advance()
    services.workflow_import(text=pricing_file(DRAFT).replace(
        "steps:\n", "steps:\n  - {id: wait, type: wait, duration: 1d}\n"), actor="test", to="staging")
    act = f"/admin/automation/workflow/{workflow.pk}/act/"
    # promote: a confirmation page, nothing promoted yet
    page = approver.post(act, {"action": "promote", "migrate": "1"})
    html = flat(page.content.decode())
    assert page.status_code == 200
    assert "production v1 → v2" in html
    assert "<strong>1</strong> real contact(s) are in flight on production (1 on <code>wait</code>);" in html
    assert "those on matching steps move to v2" in html
    assert '<tr class="diff-changed" data-template="pricing-followup">' in html
    assert 'value="Yes, promote to v2"' in html
    assert workflow.versions.get(number=1).state == "production"
    # confirmed: done
    approver.post(act, {"action": "promote", "migrate": "1", "confirm": "1"})
    assert workflow.versions.get(number=2).state == "production"
    # rollback asks too, and says where it goes
    html = flat(approver.post(act, {"action": "rollback"}).content.decode())
    assert "Roll back to <strong>v1</strong> (production from" in html
    assert workflow.versions.get(number=2).state == "production"
    approver.post(act, {"action": "rollback", "confirm": "1"})
    assert workflow.versions.get(number=1).state == "production"
    # pause: how many are held
    html = flat(approver.post(act, {"action": "pause"}).content.decode())
    assert "<strong>1</strong> real contact(s) and 0 test contact(s) are in flight" in html
    assert not Workflow.objects.get().paused
    approver.post(act, {"action": "pause", "confirm": "1"})
    assert Workflow.objects.get().paused


def test_kill_switches_need_a_reason(role_users) -> None:
    ops = client_for(role_users["ops"])
    response = ops.post("/admin/operations/switch/sending", {"paused": "1", "reason": "  "}, follow=True)
    assert "give a reason" in response.content.decode()
    assert not Switch.objects.filter(name="sending", paused=True).exists()
    ops.post("/admin/operations/switch/sending", {"paused": "1", "reason": "provider incident"})
    assert Switch.objects.get(name="sending").paused
    ops.post("/admin/operations/switch/sending", {"paused": "0"})
    assert Switch.objects.get(name="sending").paused  # resuming needs one too
    ops.post("/admin/operations/switch/sending", {"paused": "0", "reason": "provider fixed it"})
    assert not Switch.objects.get(name="sending").paused
    reasons = AuditEntry.objects.filter(action__startswith="switch.").order_by("id").values_list("data__reason",
                                                                                                 flat=True)
    assert list(reasons) == ["provider incident", "provider fixed it"]
