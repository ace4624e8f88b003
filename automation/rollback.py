"""Automatic rollback: a production version promoted in the last AUTO_ROLLBACK_HOURS whose steps
start failing (the operations page's jump rule, core.ops.workflow_failure_jumps, and the version's
own runs failing as much), or whose emails bounce or draw complaints above AUTO_ROLLBACK_* rates,
is rolled back to the previous production version by itself: in-flight enrollments on steps the
previous version has move to it (the rest finish where they are), an audit entry names the
figures and an incident notifies ops. Opt-in per workflow (Workflow.auto_rollback); never for a
first version (nothing to go back to) nor for a version that is production by a rollback.

Read-only over rows others write (StepRun, Message); run every minute by the scheduler.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from automation.models import StepRun, StepRunStatus, VersionState, Workflow, WorkflowVersion

if TYPE_CHECKING:
    from core.alerts import Firing

log = logging.getLogger(__name__)

ACTOR = "auto-rollback"  # the audit entries' actor (a system actor holds every permission)


@dataclass
class Verdict:
    reason: str  # "" when the version is fine
    figures: dict[str, Any]


def _step_figures(version: WorkflowVersion, now: dt.datetime) -> dict[str, Any]:
    """The version's step runs with an outcome in the last hour (as core.ops counts them)."""
    from core import ops

    since = max(now - ops.JUMP_RECENT, version.promoted_at or now)
    window = (Q(status__in=[StepRunStatus.SUCCEEDED, StepRunStatus.FAILED], finished_at__gte=since,
                finished_at__lte=now)
              | Q(status=StepRunStatus.RETRYING, finished_at__isnull=True, started_at__gte=since, started_at__lte=now))
    row = StepRun.objects.filter(window, version=version).aggregate(
        total=Count("id"), failed=Count("id", filter=Q(status__in=[StepRunStatus.FAILED, StepRunStatus.RETRYING])))
    total, failed = row["total"], row["failed"]
    return {"step_runs": total, "step_failures": failed, "step_failure_rate": round(failed / total, 4) if total else 0}


def _mail_figures(version: WorkflowVersion) -> dict[str, Any]:
    """Emails the version's send_email steps queued since its promotion: attempted (sent or bounced),
    hard-bounced, complained."""
    from campaigns.models import Message

    ids = [r.get("message_id") for r in StepRun.objects.filter(
        version=version, step_type="send_email", started_at__gte=version.promoted_at).values_list("result", flat=True)
        if isinstance(r, dict)]
    ids = [i for i in ids if isinstance(i, int)]
    attempted = bounced = complained = 0
    for start in range(0, len(ids), 1000):
        row = Message.objects.filter(pk__in=ids[start:start + 1000]).aggregate(
            attempted=Count("id", filter=Q(sent_at__isnull=False) | Q(bounced_at__isnull=False)),
            bounced=Count("id", filter=Q(bounced_at__isnull=False)),
            complained=Count("id", filter=Q(complained_at__isnull=False)))
        attempted += row["attempted"]
        bounced += row["bounced"]
        complained += row["complained"]
    return {"emails": attempted, "bounces": bounced, "complaints": complained,
            "bounce_rate": round(bounced / attempted, 4) if attempted else 0,
            "complaint_rate": round(complained / attempted, 4) if attempted else 0}


def rollback_verdict(*, version: WorkflowVersion, jumped: bool, now: dt.datetime) -> Verdict:
    """Why `version` should be rolled back now ("" when it should not), with the figures."""
    from core import ops

    figures = {**_step_figures(version, now), **_mail_figures(version)}
    if jumped and figures["step_failures"] >= ops.JUMP_MIN_FAILURES and \
            figures["step_failure_rate"] >= ops.JUMP_MIN_RATE:
        return Verdict(f"step failure rate {figures['step_failure_rate']:.0%} ({figures['step_failures']} of "
                       f"{figures['step_runs']} step runs in the last hour) jumped", figures)
    if figures["emails"] >= settings.AUTO_ROLLBACK_MIN_SENDS:
        if figures["bounce_rate"] > settings.AUTO_ROLLBACK_BOUNCE_RATE:
            return Verdict(f"bounce rate {figures['bounce_rate']:.1%} ({figures['bounces']} of {figures['emails']} "
                           f"emails) over {settings.AUTO_ROLLBACK_BOUNCE_RATE:.1%}", figures)
        if figures["complaint_rate"] > settings.AUTO_ROLLBACK_COMPLAINT_RATE:
            return Verdict(f"complaint rate {figures['complaint_rate']:.2%} ({figures['complaints']} of "
                           f"{figures['emails']} emails) over {settings.AUTO_ROLLBACK_COMPLAINT_RATE:.2%}", figures)
    return Verdict("", figures)


def _became_production_by_promotion(version: WorkflowVersion) -> bool:
    from core.models import AuditEntry

    last = AuditEntry.objects.filter(target_type=version._meta.label_lower, target_id=str(version.pk),
                                     action__in=["workflow.promoted", "workflow.rolled_back"]).order_by("-id").first()
    return last is not None and last.action == "workflow.promoted"


def candidates(now: dt.datetime) -> list[WorkflowVersion]:
    """Production versions of opted-in workflows, promoted within AUTO_ROLLBACK_HOURS, with an
    earlier production version to go back to."""
    from automation.services import rollback_target

    since = now - dt.timedelta(hours=settings.AUTO_ROLLBACK_HOURS)
    versions = WorkflowVersion.objects.filter(state=VersionState.PRODUCTION, workflow__auto_rollback=True,
                                              promoted_at__gte=since).select_related("workflow")
    return [v for v in versions
            if rollback_target(workflow=v.workflow) is not None and _became_production_by_promotion(v)]


def workflows_auto_rollback(*, now: dt.datetime | None = None) -> list[str]:
    """Roll back every candidate whose verdict says so; returns what was done, one line each."""
    from core import ops

    now = now or timezone.now()
    found = candidates(now)
    if not found:
        return []
    jumped = {j.workflow_id for j in ops.workflow_failure_jumps(now)}
    done = []
    for version in found:
        verdict = rollback_verdict(version=version, jumped=version.workflow_id in jumped, now=now)
        if verdict.reason:
            line = _roll_back(version, verdict, now)
            if line:
                done.append(line)
    return done


def _roll_back(version: WorkflowVersion, verdict: Verdict, now: dt.datetime) -> str:
    from automation.services import rollback_target, workflow_rollback
    from core.alerts import Firing, open_incident
    from core.audit import audit_record

    workflow: Workflow = version.workflow
    try:
        with transaction.atomic():
            current = WorkflowVersion.objects.select_for_update().get(pk=version.pk)
            if current.state != VersionState.PRODUCTION:
                return ""  # rolled back or replaced meanwhile
            target = rollback_target(workflow=workflow)
            restored = workflow_rollback(workflow=workflow, actor=ACTOR, migrate=True)
            audit_record(actor=ACTOR, action="workflow.auto_rolled_back", target=version, data={
                "workflow": workflow.key, "from": version.number, "to": restored.number, "reason": verdict.reason,
                "promoted_at": version.promoted_at.isoformat() if version.promoted_at else None, **verdict.figures})
    except (ValidationError, PermissionDenied) as exc:
        log.warning("automatic rollback of %s v%s refused: %s", workflow.key, version.number, exc)
        return ""
    summary = (f"workflow {workflow.key}: v{version.number} rolled back to v{restored.number} automatically: "
               f"{verdict.reason}")
    open_incident(Firing(f"workflow_auto_rollback:{version.pk}", summary,
                         {"workflow": workflow.key, "from": version.number, "to": restored.number,
                          "target": target.number if target else None, **verdict.figures}), now=now)
    log.warning(summary)
    return summary


def rollback_incidents_open(now: dt.datetime) -> list[Firing]:
    """The incidents of automatic rollbacks in the last AUTO_ROLLBACK_HOURS whose
    workflow still runs the version restored (nobody has promoted a fix yet): core.alerts keeps
    their incidents open until then (its minute check resolves what no longer fires)."""
    from core.alerts import Firing
    from core.models import AuditEntry

    since = now - dt.timedelta(hours=settings.AUTO_ROLLBACK_HOURS)
    entries = list(AuditEntry.objects.filter(action="workflow.auto_rolled_back", at__gte=since).order_by("-id")[:100])
    if not entries:
        return []
    production = dict(WorkflowVersion.objects.filter(
        state=VersionState.PRODUCTION, workflow__key__in=[e.data.get("workflow") for e in entries])
        .values_list("workflow__key", "number"))
    return [Firing(f"workflow_auto_rollback:{e.target_id}",
                   f"workflow {e.data.get('workflow')}: v{e.data.get('from')} rolled back to v{e.data.get('to')} "
                   f"automatically: {e.data.get('reason')}", dict(e.data))
            for e in entries if production.get(e.data.get("workflow")) == e.data.get("to")]


def workflows_auto_rollback_job() -> list[str]:
    """Scheduler entry (config/schedules.py): safe to run late, twice or concurrently (the rollback
    locks the workflow and re-checks the version is still production)."""
    return workflows_auto_rollback()
