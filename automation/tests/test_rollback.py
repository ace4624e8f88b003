"""Issue 24: automatic rollback. A new production version whose step starts failing for real (the
step runner runs it against real contacts) is rolled back to the previous production version by
the scheduled check, audited with the figures and with an incident; enrollments continue on the
previous version. Below the operations page's threshold, or not opted in, nothing happens."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from automation.models import Enrollment, StepRun, Workflow
from automation.rollback import workflows_auto_rollback
from automation.services import workflow_import, workflow_promote, workflow_stage
from automation.tests.conftest import advance, deploy, emit, make_contact, version, wf_file
from campaigns.models import Message
from core.alerts import alerts_check
from core.models import AuditEntry, Incident

pytestmark = pytest.mark.django_db

V1: list[dict[str, Any]] = [{"id": "welcome", "type": "send_email", "template": "welcome"},
                            {"id": "wait", "type": "wait", "duration": "1d"},
                            {"id": "thanks", "type": "send_email", "template": "thanks"}]
# v2 adds a step that fails for every contact: "bogus" is not a lifecycle stage (the contact's
# validation refuses it when the step runs; the file format does not know the stages).
V2: list[dict[str, Any]] = [V1[0], {"id": "mark", "type": "update_contact", "set": {"lifecycle_stage": "bogus"}},
                            *V1[1:]]


def text(steps: list[dict[str, Any]]) -> str:
    return wf_file("webinar", steps=steps, templates=["welcome", "thanks"],
                   trigger={"type": "event", "event": "webinar_registered"})


def register(*emails: str) -> None:
    for email in emails:
        emit(make_contact(email, first_name="Ada"), "webinar_registered")


@pytest.fixture
def promoted(sender: Any) -> Workflow:
    """v1 in production with one contact waiting on it; then v2 promoted; opted in."""
    workflow = deploy(text(V1))
    Workflow.objects.filter(pk=workflow.pk).update(auto_rollback=True)
    register("early@example.com")
    advance()
    workflow_stage(version=workflow_import(text=text(V2), actor="test").versions[0], actor="test")
    workflow_promote(workflow=workflow, actor="test")
    return workflow


def test_failing_step_after_promotion_rolls_back_with_incident_and_enrollments_continue_on_v1(promoted) -> None:
    v1, v2 = promoted.versions.get(number=1), version(promoted, "production")
    assert v2.number == 2
    register(*(f"late{i}@example.com" for i in range(6)))
    advance()  # welcome is sent, mark fails for all six
    assert StepRun.objects.filter(version=v2, step_id="mark", status="failed").count() == 6
    register("pending@example.com")  # entered v2, not run yet
    pending = Enrollment.objects.get(contact__email="pending@example.com")
    assert pending.version == v2

    done = workflows_auto_rollback()

    assert done == ["workflow webinar: v2 rolled back to v1 automatically: step failure rate 50% "
                    "(6 of 12 step runs in the last hour) jumped"]
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.state, v2.state) == ("production", "archived")
    entry = AuditEntry.objects.get(action="workflow.auto_rolled_back")
    assert entry.actor_label == "auto-rollback"
    assert entry.target_id == str(v2.pk)
    assert {k: entry.data[k] for k in ("from", "to", "step_runs", "step_failures", "step_failure_rate")} == {
        "from": 2, "to": 1, "step_runs": 12, "step_failures": 6, "step_failure_rate": 0.5}
    assert AuditEntry.objects.filter(action="workflow.rolled_back", actor_label="auto-rollback").exists()
    incident = Incident.objects.get(key=f"workflow_auto_rollback:{v2.pk}")
    assert incident.resolved_at is None
    assert "v2 rolled back to v1" in incident.summary
    assert incident.detail["step_failures"] == 6

    # Enrollments continue on v1: the pending one moved (its step exists in v1), the early one
    # stayed, a new registration enters v1; all get v1's welcome and wait.
    register("after@example.com")
    advance()
    for email in ("pending@example.com", "after@example.com"):
        enrollment = Enrollment.objects.get(contact__email=email)
        assert (enrollment.version, enrollment.status, enrollment.step_id) == (v1, "waiting", "wait"), email
        assert Message.objects.filter(contact=enrollment.contact).count() == 1
    early = Enrollment.objects.get(contact__email="early@example.com")
    assert (early.version, early.status) == (v1, "waiting")

    # v1 is production by a rollback now: the next tick leaves it alone
    assert workflows_auto_rollback() == []
    assert version(promoted, "production") == v1
    # the minute's alert check keeps the incident open (it resolves what no longer fires) until
    # v2 is promoted again
    alerts_check()
    assert Incident.objects.get(key=f"workflow_auto_rollback:{v2.pk}").resolved_at is None


def test_the_incident_resolves_once_a_fix_is_promoted(promoted) -> None:
    v2 = version(promoted, "production")
    register(*(f"late{i}@example.com" for i in range(6)))
    advance()
    assert workflows_auto_rollback()
    workflow_stage(version=workflow_import(text=text(V1[:1]), actor="test").versions[0], actor="test")
    alerts_check()
    assert Incident.objects.get().resolved_at is None
    workflow_promote(workflow=promoted, actor="test")  # a fix, v3
    alerts_check()
    incident = Incident.objects.get()
    assert (incident.key, incident.resolved_at is not None) == (f"workflow_auto_rollback:{v2.pk}", True)


def test_opting_in_through_the_admin_is_audited(promoted, role_users) -> None:
    from django.test import Client

    client = Client()
    client.force_login(role_users["marketer"])
    url = f"/admin/automation/workflow/{promoted.pk}/change/"
    response = client.post(url, {"test_segment": "", "auto_rollback": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    promoted.refresh_from_db()
    assert promoted.auto_rollback is False
    entry = AuditEntry.objects.get(action="workflow.auto_rollback_off")
    assert entry.actor == role_users["marketer"]


def test_below_the_threshold_nothing_is_rolled_back(promoted) -> None:
    register(*(f"late{i}@example.com" for i in range(4)))  # 4 failures: the rule needs 5
    advance()
    assert StepRun.objects.filter(step_id="mark", status="failed").count() == 4
    assert workflows_auto_rollback() == []
    assert version(promoted, "production").number == 2
    assert not AuditEntry.objects.filter(action="workflow.auto_rolled_back").exists()
    assert not Incident.objects.exists()


def test_not_opted_in_nothing_is_rolled_back(promoted) -> None:
    Workflow.objects.filter(pk=promoted.pk).update(auto_rollback=False)
    register(*(f"late{i}@example.com" for i in range(6)))
    advance()
    assert workflows_auto_rollback() == []
    assert version(promoted, "production").number == 2


def test_a_first_version_is_never_rolled_back(sender: Any) -> None:
    workflow = deploy(text(V2))
    Workflow.objects.filter(pk=workflow.pk).update(auto_rollback=True)
    register(*(f"first{i}@example.com" for i in range(6)))
    advance()
    assert StepRun.objects.filter(step_id="mark", status="failed").count() == 6
    assert workflows_auto_rollback() == []
    assert version(workflow, "production").number == 1


def test_bounces_over_the_setting_roll_back(promoted, settings) -> None:
    settings.AUTO_ROLLBACK_MIN_SENDS = 4
    settings.AUTO_ROLLBACK_BOUNCE_RATE = 0.25
    v2 = version(promoted, "production")
    register(*(f"b{i}@example.com" for i in range(4)))
    advance()  # 4 welcome emails queued; 4 failures of mark: below the step rule's 5
    ids = [r["message_id"] for r in StepRun.objects.filter(version=v2, step_id="welcome")
           .values_list("result", flat=True)]
    assert len(ids) == 4
    now = timezone.now()
    Message.objects.filter(pk__in=ids).update(sent_at=now, status="sent")
    Message.objects.filter(pk__in=ids[:1]).update(bounced_at=now, status="bounced")
    assert workflows_auto_rollback() == []  # 1 of 4 = 25 %: not over 25 %
    Message.objects.filter(pk__in=ids[:2]).update(bounced_at=now, status="bounced")
    [line] = workflows_auto_rollback()
    assert line.endswith("bounce rate 50.0% (2 of 4 emails) over 25.0%")
    assert version(promoted, "production").number == 1
    assert AuditEntry.objects.get(action="workflow.auto_rolled_back").data["bounces"] == 2
