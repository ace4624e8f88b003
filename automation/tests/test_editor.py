"""Issue 15, item 4: the admin's draft editor. Steps are added, removed, moved and edited in
forms; a template the draft sends is edited (a new revision this draft pins); invalid drafts are
kept but cannot be staged, every issue named by step id; exports of edited drafts round-trip."""

from __future__ import annotations

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.test import Client

from automation import editor, services
from automation.models import VersionState, WorkflowVersion
from automation.tests.conftest import deploy, version
from automation.tests.test_content_versions import OLD, pricing_file

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def form_of(v: WorkflowVersion) -> dict[str, str]:
    """What the editor page posts for a version as it is (the same helpers render the page)."""
    data = {f"wf-{name}": value for name, value in editor.workflow_fields(v.definition)}
    forms = editor.step_forms(v.definition)
    data["step-count"] = str(len(forms))
    for f in forms:
        data.update({f"step-{f.index}-id": f.id, f"step-{f.index}-type": f.type, f"step-{f.index}-next": f.next})
        data.update({f"step-{f.index}-f-{name}": value for name, value in f.fields})
    return data


def test_inline_values_read_back_as_the_same_value() -> None:
    for value in ["2d", "yes", "10", 10, {"segment": "vip"}, ["a", "b"], "a: b", {"field": "x", "value": None}]:
        assert editor.read_inline(editor.inline(value), "f") == value
    with pytest.raises(ValueError, match="step s1 if: not a value"):
        editor.read_inline("{segment: [", "step s1 if")


def test_marketer_adds_moves_edits_and_removes_steps_and_export_round_trips(role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    marketer = client_for(role_users["marketer"])
    production = version(workflow, "production")
    url = f"/admin/automation/workflow/{workflow.pk}/edit/"
    # editing production makes a new draft with the same pins; production is untouched
    response = marketer.post(f"{url}?version={production.pk}", {"op": "new_draft"})
    draft = WorkflowVersion.objects.get(workflow=workflow, state=VersionState.DRAFT)
    assert response.status_code == 302
    assert response["Location"].endswith(f"?version={draft.pk}")
    assert draft.number == 2
    assert list(draft.pins.values_list("revision", flat=True)) == \
        list(production.pins.values_list("revision", flat=True))
    # add a wait step, fill it in, move it first
    assert marketer.post(f"{url}?version={draft.pk}", {**form_of(draft), "op": "add", "add-type": "wait"}).status_code \
        == 302
    draft.refresh_from_db()
    assert [s["id"] for s in draft.steps] == ["followup", "step-2"]
    page = marketer.get(f"{url}?version={draft.pk}").content.decode()
    assert "step-2: a wait needs exactly one of duration, until or window" in page  # named by step id
    data = {**form_of(draft), "step-1-f-duration": "2d", "step-1-id": "pause", "op": "up:1"}
    marketer.post(f"{url}?version={draft.pk}", data)
    draft.refresh_from_db()
    assert draft.steps == [{"id": "pause", "type": "wait", "duration": "2d"},
                           {"id": "followup", "type": "send_email", "template": "pricing-followup"}]
    assert services.version_issues(version=draft) == []
    assert draft.definition["trigger"] == production.definition["trigger"]  # workflow fields kept
    # an exported edited draft imports as nothing new (the file format stays the source of truth)
    text = services.version_export(version=draft)
    assert yaml.safe_load(text)["workflows"][0]["steps"][0] == {"id": "pause", "type": "wait", "duration": "2d"}
    assert services.workflow_import(text=text, actor="test").unchanged == [draft]
    # remove the wait again
    marketer.post(f"{url}?version={draft.pk}", {**form_of(draft), "op": "remove:0"})
    draft.refresh_from_db()
    assert [s["id"] for s in draft.steps] == ["followup"]
    assert version(workflow, "production").definition == production.definition


def test_an_invalid_draft_is_kept_but_cannot_be_staged_every_error_listed(role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    draft = services.version_draft_edit(version=version(workflow, "production"), actor=role_users["marketer"])
    marketer = client_for(role_users["marketer"])
    url = f"/admin/automation/workflow/{workflow.pk}/edit/?version={draft.pk}"
    data = {**form_of(draft), "step-0-f-template": "no-such-email", "step-0-next": "nowhere"}
    marketer.post(url, data)
    draft.refresh_from_db()
    assert draft.steps[0]["template"] == "no-such-email"  # kept, so work is not lost
    page = marketer.get(url).content.decode()
    assert "followup: unknown template &#x27;no-such-email&#x27;" in page
    assert "followup: next &#x27;nowhere&#x27; is not a step of this workflow" in page
    response = marketer.post(f"/admin/automation/workflow/{workflow.pk}/act/",
                             {"action": "stage", "version": draft.pk}, follow=True)
    shown = response.content.decode()
    assert "unknown template &#x27;no-such-email&#x27;" in shown
    assert "&#x27;nowhere&#x27; is not a step" in shown
    draft.refresh_from_db()
    assert draft.state == VersionState.DRAFT
    # an unreadable value is not saved; the page names the field
    bad = marketer.post(url, {**form_of(draft), "step-0-f-template": "{oops: ["}).content.decode()
    assert "step followup template: not a value" in bad


def test_editing_the_drafts_email_pins_a_new_revision_production_keeps_its_own(role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    production = version(workflow, "production")
    draft = services.version_draft_edit(version=production, actor=role_users["marketer"])
    marketer = client_for(role_users["marketer"])
    url = f"/admin/automation/workflow/{workflow.pk}/edit/?version={draft.pk}"
    response = marketer.post(url, {"op": "template", "template": "pricing-followup", "t-subject": "New pricing",
                                   "t-html": "<p>Now 9 EUR</p>", "t-text": ""})
    assert response.status_code == 302
    assert draft.pins.get().revision.subject == "New pricing"
    assert production.pins.get().revision.subject == OLD
    # a template that does not render is refused, named, and nothing is pinned
    page = marketer.post(url, {"op": "template", "template": "pricing-followup", "t-subject": "{% if %}",
                               "t-html": "<p>x</p>"}).content.decode()
    assert "errorlist" in page
    assert draft.pins.get().revision.subject == "New pricing"
    # only drafts change
    with pytest.raises(ValidationError, match="only a draft can be edited"):
        services.version_draft_update(version=production, definition=production.definition, actor="test")


def test_viewer_roles_cannot_post_to_the_editor(role_users) -> None:
    workflow = deploy(pricing_file(OLD))
    production = version(workflow, "production")
    ops = client_for(role_users["ops"])
    url = f"/admin/automation/workflow/{workflow.pk}/edit/?version={production.pk}"
    assert ops.get(url).status_code == 200
    assert ops.post(url, {"op": "new_draft"}).status_code == 403
    assert not WorkflowVersion.objects.filter(state=VersionState.DRAFT).exists()
