"""Version lifecycle: import, stage, promote (permission, second person), rollback, pinned and
migrated enrollments, audit entries, the CLI and the file round trip."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.utils import timezone

from automation import services
from automation.models import Enrollment, Workflow, WorkflowVersion
from automation.tests.conftest import ISSUE_EXAMPLE, advance, deploy, emit, make_contact, wf_file
from campaigns.models import Message
from core.models import AuditEntry

pytestmark = pytest.mark.django_db

V1 = [{"id": "hi", "type": "send_email", "template": "hi"}, {"id": "w", "type": "wait", "duration": "1d"},
      {"id": "old", "type": "wait", "duration": "1d"}, {"id": "bye", "type": "send_email", "template": "bye"}]
V2 = [{"id": "hi", "type": "send_email", "template": "hi"}, {"id": "w", "type": "wait", "duration": "1d"},
      {"id": "new", "type": "send_email", "template": "new"}, {"id": "bye", "type": "send_email", "template": "bye"}]
TEMPLATES = ["hi", "bye", "new"]


def states(workflow: Workflow) -> dict[int, str]:
    return dict(workflow.versions.values_list("number", "state"))


def test_import_stage_promote_archive_and_rollback_are_audited(role_users) -> None:
    approver = role_users["approver"]
    result = services.workflow_import(text=wf_file(steps=V1, templates=TEMPLATES), actor=role_users["marketer"])
    v1 = result.versions[0]
    workflow = v1.workflow
    assert (v1.number, v1.state, v1.author) == (1, "draft", role_users["marketer"])
    services.workflow_stage(version=v1, actor=role_users["marketer"])
    services.workflow_promote(workflow=workflow, actor=approver)
    v2 = services.workflow_import(text=wf_file(steps=V2, templates=TEMPLATES), actor=role_users["marketer"],
                                  to="staging").versions[0]
    assert states(workflow) == {1: "production", 2: "staging"}
    services.workflow_promote(workflow=workflow, actor=approver)
    assert states(workflow) == {1: "archived", 2: "production"}
    v2.refresh_from_db()
    assert v2.promoted_by == approver
    assert v2.promoted_at is not None
    services.workflow_rollback(workflow=workflow, actor=approver)
    assert states(workflow) == {1: "production", 2: "archived"}
    actions = list(AuditEntry.objects.filter(target_type="automation.workflowversion").order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["workflow.draft_created", "workflow.staged", "workflow.promoted", "workflow.draft_created",
                       "workflow.staged", "workflow.promoted", "workflow.rolled_back"]


def test_the_database_allows_one_staging_and_one_production_version() -> None:
    workflow = deploy(wf_file(steps=V1, templates=TEMPLATES))
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowVersion.objects.create(workflow=workflow, number=9, definition={}, state="production")
    WorkflowVersion.objects.create(workflow=workflow, number=10, definition={}, state="staging")
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowVersion.objects.create(workflow=workflow, number=11, definition={}, state="staging")


def test_a_marketer_cannot_promote_and_an_approver_can(role_users) -> None:
    workflow = deploy(wf_file(steps=V1, templates=TEMPLATES), stage_only=True)
    with pytest.raises(PermissionDenied):
        services.workflow_promote(workflow=workflow, actor=role_users["marketer"])
    assert states(workflow) == {1: "staging"}
    services.workflow_promote(workflow=workflow, actor=role_users["approver"])
    assert states(workflow) == {1: "production"}


def test_a_second_person_can_be_required(role_users, settings) -> None:
    settings.WORKFLOW_PROMOTE_SECOND_PERSON = True
    approver = role_users["approver"]
    services.workflow_import(text=wf_file(steps=V1, templates=TEMPLATES), actor=approver, to="staging")
    workflow = Workflow.objects.get()
    with pytest.raises(PermissionDenied, match="different person"):
        services.workflow_promote(workflow=workflow, actor=approver)
    services.workflow_promote(workflow=workflow, actor=role_users["admin"])
    assert states(workflow) == {1: "production"}


def test_invalid_versions_cannot_be_staged_and_imports_list_every_error() -> None:
    bad = wf_file(steps=[{"id": "a", "type": "send_email", "template": "missing"}, {"id": "b", "type": "nope"}])
    with pytest.raises(ValidationError) as exc:
        services.workflow_import(text=bad, actor="test")
    assert exc.value.messages == ["nurture step 'a': unknown template 'missing'",
                                  "nurture step 'b': unknown step type 'nope' (known: send_email, wait, branch, "
                                  "update_contact, adjust_score, notify_sales, crm_sync, webhook, exit)"]
    assert not Workflow.objects.exists()


def run_to_steps(sender) -> tuple[Workflow, dict[str, Enrollment]]:  # noqa: ANN001
    """v1 in production with one contact waiting on `w` and one on `old`."""
    workflow = deploy(wf_file(steps=V1, templates=TEMPLATES))
    on_w, on_old = make_contact("on-w@example.com"), make_contact("on-old@example.com")
    emit(on_old, "signed_up")
    advance()
    advance(timezone.now() + dt.timedelta(days=1, minutes=1))
    emit(on_w, "signed_up")
    advance()
    by_email = {e.contact.email: e for e in Enrollment.objects.select_related("contact")}
    assert {k: e.step_id for k, e in by_email.items()} == {"on-w@example.com": "w", "on-old@example.com": "old"}
    services.workflow_import(text=wf_file(steps=V2, templates=TEMPLATES), actor="test", to="staging")
    return workflow, by_email


def test_promote_keeps_in_flight_enrollments_pinned_by_default(sender) -> None:
    workflow, _ = run_to_steps(sender)
    services.workflow_promote(workflow=workflow, actor="test")
    assert set(Enrollment.objects.values_list("version__number", flat=True)) == {1}
    advance(timezone.now() + dt.timedelta(days=3))
    advance(timezone.now() + dt.timedelta(days=5))
    assert not Message.objects.filter(template__key="new").exists()  # v1 has no "new" step
    assert Message.objects.filter(template__key="bye").count() == 2


def test_promote_with_migration_moves_matching_steps_and_previews_the_removed_ones(sender) -> None:
    workflow, _ = run_to_steps(sender)
    staging = WorkflowVersion.objects.get(workflow=workflow, state="staging")
    production = WorkflowVersion.objects.get(workflow=workflow, state="production")
    preview = services.migration_preview(source=production, target=staging)
    assert (preview.moved, preview.kept) == ({"w": 1}, {"old": 1})
    services.workflow_promote(workflow=workflow, actor="test", migrate=True)
    versions = dict(Enrollment.objects.values_list("contact__email", "version__number"))
    assert versions == {"on-w@example.com": 2, "on-old@example.com": 1}
    advance(timezone.now() + dt.timedelta(days=3))
    # the migrated contact continues on v2's path after `w`; the other finishes v1
    assert list(Message.objects.filter(template__key="new").values_list("contact__email", flat=True)) == [
        "on-w@example.com"]
    audit = AuditEntry.objects.get(action="workflow.promoted", data__number=2)
    assert audit.data["moved"] == 1
    assert audit.data["kept_on_removed_steps"] == {"old": 1}


def test_rollback_with_migration_brings_contacts_back(sender) -> None:
    workflow, _ = run_to_steps(sender)
    services.workflow_promote(workflow=workflow, actor="test", migrate=True)
    services.workflow_rollback(workflow=workflow, actor="test", migrate=True)
    assert set(Enrollment.objects.values_list("version__number", flat=True)) == {1}
    Workflow.objects.get().versions.exclude(number=1).update(promoted_at=None)
    with pytest.raises(ValidationError, match="earlier production"):
        services.workflow_rollback(workflow=workflow, actor="test")


def test_export_of_an_import_equals_the_input() -> None:
    services.workflow_import(text=ISSUE_EXAMPLE, actor="test")
    exported = services.workflows_export()
    assert "webinar-welcome" in exported
    assert "templates:" in exported
    # canonical text round-trips unchanged, and importing it again creates no new version
    result = services.workflow_import(text=exported, actor="test")
    assert result.versions == []
    assert len(result.unchanged) == 1
    assert services.workflows_export() == exported
    as_json = services.workflows_export(fmt="json")
    assert services.workflow_import(text=as_json, actor="test").versions == []


def test_the_cli_round_trip_promote_and_rollback(tmp_path) -> None:
    source = tmp_path / "wf.yaml"
    source.write_text(ISSUE_EXAMPLE)
    call_command("workflows", "import", str(source), "--to", "staging", stdout=io.StringIO())
    out = io.StringIO()
    call_command("workflows", "export", "webinar-welcome", stdout=out)
    canonical = tmp_path / "canonical.yaml"
    canonical.write_text(out.getvalue())
    again = io.StringIO()
    call_command("workflows", "import", str(canonical), stdout=again)
    assert again.getvalue().startswith("unchanged webinar-welcome v1")
    out2 = io.StringIO()
    call_command("workflows", "export", "webinar-welcome", stdout=out2)
    assert out2.getvalue() == canonical.read_text()
    call_command("workflows", "promote", "webinar-welcome", stdout=io.StringIO())
    workflow = Workflow.objects.get(key="webinar-welcome")
    assert states(workflow) == {1: "production"}
    with pytest.raises(CommandError, match="earlier production"):
        call_command("workflows", "rollback", "webinar-welcome", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no workflow"):
        call_command("workflows", "promote", "nope")


def test_the_cli_checks_the_named_users_permission(role_users, tmp_path) -> None:
    source = tmp_path / "wf.yaml"
    source.write_text(ISSUE_EXAMPLE)
    call_command("workflows", "import", str(source), "--to", "staging", stdout=io.StringIO())
    with pytest.raises(CommandError, match="promote_workflow"):
        call_command("workflows", "promote", "webinar-welcome", "--as", "marketer")
    call_command("workflows", "promote", "webinar-welcome", "--as", "approver", stdout=io.StringIO())
    assert AuditEntry.objects.filter(action="workflow.promoted", actor=role_users["approver"]).exists()
