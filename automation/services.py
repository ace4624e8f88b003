"""Writes of the workflow domain: entering contacts (triggers, goals, manual), and the version
lifecycle (import, stage, promote, rollback, in-flight migration, pause), each audited.

Staging versions run for the test audience only (Contact.is_test or the workflow's test
segment); production versions for everyone else. A real contact never runs a staging version.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from automation import definition as d
from automation.engine import advance_after_commit, enqueue_advance
from automation.models import (
    LIVE_STATUSES,
    Enrollment,
    EnrollmentStatus,
    TemplatePin,
    VersionState,
    Workflow,
    WorkflowVersion,
)
from contacts.models import Contact, ContactScore, Event, Segment, SegmentMembership
from core.audit import audit_record
from core.logs import current_correlation_id, rows_extra

log = logging.getLogger(__name__)

SEGMENT_ENTERED = "segment_entered"  # contacts.segments.services.SEGMENT_ENTERED


# --- Entering: triggers and goals -----------------------------------------------------------------


@dataclass
class _Live:
    workflow: Workflow
    versions: dict[str, WorkflowVersion] = field(default_factory=dict)  # state -> version


def _live_workflows() -> list[_Live]:
    """Unpaused workflows with a staging or production version (one query)."""
    live: dict[int, _Live] = {}
    versions = WorkflowVersion.objects.filter(state__in=[VersionState.STAGING, VersionState.PRODUCTION],
                                              workflow__paused=False).select_related("workflow")
    for v in versions:
        live.setdefault(v.workflow_id, _Live(v.workflow)).versions[v.state] = v
    return list(live.values())


def workflows_on_events(*, events: Sequence[Event], now: dt.datetime | None = None) -> list[int]:
    """Called by the event pipeline inside its batch transaction: goals exit the contacts who reached
    them, then triggers enroll contacts (re-entry rules apply). Returns the new enrollments' ids;
    their first steps run after COMMIT (`engine.advance_after_commit`)."""
    if not events:
        return []
    now = now or timezone.now()
    # Goals first: they concern enrollments from earlier batches, not the ones this batch creates.
    _apply_goals(events, now)
    created: list[int] = []
    for live in _live_workflows():
        created += _enroll_from_events(live, events, now)
    advance_after_commit(enrollment_ids=created)
    return created


def _trigger_matches(trigger: dict[str, Any], event: Event) -> bool:
    kind = trigger.get("type")
    if kind == "event":
        return event.event_type == trigger.get("event") and _props_match(trigger.get("where"), event)
    if kind == "segment_entered":
        if event.event_type != SEGMENT_ENTERED:
            return False
        seg = trigger.get("segment")
        props = event.properties or {}
        return str(props.get("segment_id")) == str(seg) or props.get("segment") == seg
    return kind == "score_reached"  # any event may carry a score change; the score is checked after


def _props_match(where: dict[str, Any] | None, event: Event) -> bool:
    props = event.properties or {}
    return all(props.get(k) == v for k, v in (where or {}).items())


def _enroll_from_events(live: _Live, events: Sequence[Event], now: dt.datetime) -> list[int]:
    first_event: dict[tuple[str, int], Event | None] = {}  # (state, contact) -> triggering event
    for state, version in live.versions.items():
        trigger = version.definition.get("trigger") or {}
        for event in events:
            if _trigger_matches(trigger, event):
                first_event.setdefault((state, event.contact_id), event)
    if not first_event:
        return []
    contact_ids = {cid for _, cid in first_event}
    test_ids = _test_audience(live.workflow, contact_ids)
    chosen: dict[int, tuple[WorkflowVersion, Event | None]] = {}
    for (state, cid), cause in first_event.items():
        runs = _version_for(live, cid in test_ids)
        if runs is not None and runs.state == state:
            chosen[cid] = (runs, cause)
    chosen = _score_filter(chosen)
    return _enroll(live.workflow, chosen, test_ids, now)


def _version_for(live: _Live, is_test: bool) -> WorkflowVersion | None:
    """The test audience runs staging when there is one; everyone else only ever production."""
    if is_test and VersionState.STAGING in live.versions:
        return live.versions[VersionState.STAGING]
    return live.versions.get(VersionState.PRODUCTION)


def _test_audience(workflow: Workflow, contact_ids: Collection[int]) -> set[int]:
    ids = set(Contact.objects.filter(pk__in=contact_ids, is_test=True).values_list("pk", flat=True))
    if workflow.test_segment_id:
        ids |= set(SegmentMembership.objects.filter(segment_id=workflow.test_segment_id, contact_id__in=contact_ids)
                   .values_list("contact_id", flat=True))
    return ids


def _score_filter(chosen: dict[int, tuple[WorkflowVersion, Event | None]],
                  ) -> dict[int, tuple[WorkflowVersion, Event | None]]:
    """score_reached triggers: keep contacts whose (already updated) score is at the threshold."""
    needs = {cid: int(v.definition["trigger"].get("score", 0)) for cid, (v, _) in chosen.items()
             if v.definition.get("trigger", {}).get("type") == "score_reached"}
    if not needs:
        return chosen
    # One query for all of them; a contact without a ContactScore row has score 0.
    scores = dict(ContactScore.objects.filter(contact_id__in=needs).values_list("contact_id", "score"))
    return {cid: pair for cid, pair in chosen.items() if cid not in needs or scores.get(cid, 0) >= needs[cid]}


def _reentry_allows(rule: Any, history: list[tuple[str, dt.datetime]], now: dt.datetime) -> bool:
    if any(status in LIVE_STATUSES for status, _ in history):
        return False
    if not history or rule == "always":
        return True
    if isinstance(rule, dict) and "after" in rule:
        return max(at for _, at in history) <= now - d.parse_duration(rule["after"])
    return False  # once


def _enroll(workflow: Workflow, chosen: dict[int, tuple[WorkflowVersion, Event | None]], test_ids: set[int],
            now: dt.datetime) -> list[int]:
    if not chosen:
        return []
    history: dict[int, list[tuple[str, dt.datetime]]] = defaultdict(list)
    for cid, status, at in Enrollment.objects.filter(workflow=workflow, contact_id__in=chosen) \
            .values_list("contact_id", "status", "entered_at"):
        history[cid].append((status, at))
    rows = []
    manual = current_correlation_id()  # an entry without an event (by hand): the request's or job's
    for cid, (version, event) in chosen.items():
        if not _reentry_allows(version.definition.get("reentry", "once"), history[cid], now):
            continue
        steps = version.steps
        rows.append(Enrollment(contact_id=cid, workflow=workflow, version=version, step_id=str(steps[0]["id"]),
                               is_staging=version.state == VersionState.STAGING, status=EnrollmentStatus.ACTIVE,
                               next_run_at=now + _lease(), trigger_event=event, entered_at=now,
                               correlation_id=event.correlation_id if event else manual))
    # Conflicts (a live enrollment, or this event already enrolled them) are skipped by the
    # database constraints: a concurrent batch cannot enroll a contact twice.
    Enrollment.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    created = list(Enrollment.objects.filter(workflow=workflow, contact_id__in=[r.contact_id for r in rows],
                                             entered_at=now, status=EnrollmentStatus.ACTIVE)
                   .values_list("pk", "correlation_id"))
    if created:
        log.info("enrollments created", extra={"workflow": workflow.key, **rows_extra("enrollment_ids", created)})
    return [pk for pk, _ in created]


def _lease() -> dt.timedelta:
    from automation.engine import LEASE

    return LEASE


def _apply_goals(events: Sequence[Event], now: dt.datetime) -> int:
    """Contacts who did a workflow's goal event leave it (goal_reached), whatever version they run."""
    by_type: dict[str, set[int]] = defaultdict(set)
    for event in events:
        by_type[event.event_type].add(event.contact_id)
    # Versions are few; the JSON key lookup keeps this one small query per batch.
    goals = WorkflowVersion.objects.exclude(state=VersionState.DRAFT) \
        .filter(definition__goal__event__in=list(by_type)).values_list("pk", "definition")
    done = 0
    for version_id, definition in goals:
        goal = definition["goal"]
        contacts = {e.contact_id for e in events
                    if e.event_type == goal["event"] and _props_match(goal.get("where"), e)}
        if contacts:
            done += Enrollment.objects.filter(version_id=version_id, contact_id__in=contacts,
                                              status__in=LIVE_STATUSES).update(
                status=EnrollmentStatus.GOAL_REACHED, finished_at=now, next_run_at=None, updated_at=now)
    return done


def workflow_enroll(*, workflow: Workflow, contact_ids: Collection[int], actor: Any,
                    now: dt.datetime | None = None) -> list[int]:
    """Manual entry (any trigger type): the same audience and re-entry rules as triggers."""
    now = now or timezone.now()
    with transaction.atomic():
        live = next((w for w in _live_workflows() if w.workflow.pk == workflow.pk), None)
        if live is None:
            raise ValidationError("the workflow is paused or has no staging or production version")
        ids = set(Contact.objects.filter(pk__in=contact_ids).values_list("pk", flat=True))
        test_ids = _test_audience(workflow, ids)
        chosen: dict[int, tuple[WorkflowVersion, Event | None]] = {}
        for cid in ids:
            version = _version_for(live, cid in test_ids)
            if version is not None:
                chosen[cid] = (version, None)
        created = _enroll(workflow, chosen, test_ids, now)
        audit_record(actor=actor, action="workflow.enrolled", target=workflow,
                     data={"requested": len(ids), "enrolled": len(created)})
        enqueue_advance(enrollment_ids=created)
    return created


MANUAL_ENROLL_MAX = 500  # addresses per admin form; bigger audiences belong in a segment trigger


@dataclass
class ManualEnrollResult:
    enrolled: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # no contact with that address
    not_test: list[str] = field(default_factory=list)  # staging takes the test audience only
    skipped: list[str] = field(default_factory=list)  # already in it, or re-entry says no


def workflow_enroll_emails(*, workflow: Workflow, emails: Sequence[str], to: str, actor: Any,
                           now: dt.datetime | None = None) -> ManualEnrollResult:
    """The admin's manual enrollment: contacts by email into the staging version (test audience
    only: a real contact never runs staging) or the production version. Re-entry rules apply."""
    from contacts.emails import normalize_email

    if to not in (VersionState.STAGING, VersionState.PRODUCTION):
        raise ValidationError(f"enroll into staging or production, not {to!r}")
    if len(emails) > MANUAL_ENROLL_MAX:
        raise ValidationError(f"at most {MANUAL_ENROLL_MAX} addresses at a time; use a segment trigger for more")
    wanted: dict[str, str] = {}  # canonical -> as typed
    bad = []
    for raw in emails:
        try:
            wanted.setdefault(normalize_email(raw), raw)
        except ValidationError as exc:
            bad.append(f"{raw!r}: {'; '.join(exc.messages)}")
    if bad:
        raise ValidationError(bad)
    now = now or timezone.now()
    result = ManualEnrollResult()
    with transaction.atomic():
        _locked(workflow)
        if workflow.paused:
            raise ValidationError("the workflow is paused: resume it first")
        version = WorkflowVersion.objects.filter(workflow=workflow, state=to).first()
        if version is None:
            raise ValidationError(f"the workflow has no {to} version")
        contacts = dict(Contact.objects.filter(email__in=wanted).values_list("email", "pk"))
        result.unknown = sorted(e for e in wanted if e not in contacts)
        test_ids = _test_audience(workflow, set(contacts.values()))
        chosen: dict[int, tuple[WorkflowVersion, Event | None]] = {}
        for email, cid in contacts.items():
            if to == VersionState.STAGING and cid not in test_ids:
                result.not_test.append(email)
            else:
                chosen[cid] = (version, None)
        created = _enroll(workflow, chosen, test_ids, now)
        by_id = {cid: email for email, cid in contacts.items()}
        enrolled_ids = set(Enrollment.objects.filter(pk__in=created).values_list("contact_id", flat=True))
        result.enrolled = sorted(by_id[c] for c in enrolled_ids)
        result.skipped = sorted(by_id[c] for c in chosen if c not in enrolled_ids)
        result.not_test.sort()
        audit_record(actor=actor, action="workflow.enrolled", target=workflow, data={
            "to": to, "version": version.number, "requested": len(wanted), "enrolled": len(created),
            "unknown": len(result.unknown), "not_test": len(result.not_test), "skipped": len(result.skipped)})
        enqueue_advance(enrollment_ids=created)
    return result


# --- Versions ----------------------------------------------------------------------------------------


def _next_number(workflow: Workflow) -> int:
    return (workflow.versions.aggregate(n=Max("number"))["n"] or 0) + 1


def _known_templates() -> set[str]:
    from campaigns.models import EmailTemplate

    return set(EmailTemplate.objects.values_list("key", flat=True))


def known_template_keys() -> set[str]:
    return _known_templates()


def version_issues(*, version: WorkflowVersion) -> list[d.Issue]:
    issues = d.validate_workflow(version.definition, known_templates=_known_templates())
    pinned = version_pins(version=version)
    wf = str(version.definition.get("key") or version.workflow.key)
    issues += [d.Issue(wf, "", f"v{version.number} pins no revision of template {key!r}: make a new draft")
               for key in sorted(d.template_keys(version.definition) - set(pinned))]
    return issues


def version_pins(*, version: WorkflowVersion | None) -> dict[str, Any]:
    """Template key -> the EmailTemplateRevision the version sends."""
    if version is None:
        return {}
    return {pin.template.key: pin.revision
            for pin in TemplatePin.objects.filter(version=version).select_related("template", "revision__created_by")}


def _revisions_for(keys: Collection[str], given: dict[str, Any], actor: Any) -> dict[str, Any]:
    """The revision to pin per template key: the one given (a file's templates), else the
    template's current content."""
    from campaigns.models import EmailTemplate
    from campaigns.revisions import template_revision_current

    chosen = {k: given[k] for k in keys if k in given}
    for template in EmailTemplate.objects.filter(key__in=set(keys) - set(chosen)):
        chosen[template.key] = template_revision_current(template=template, actor=actor, source="workflow")
    return chosen


def _sync_workflow_fields(workflow: Workflow, definition: dict[str, Any]) -> None:
    workflow.name = str(definition.get("name") or workflow.key)[:200]
    workflow.timezone = str(definition.get("timezone") or "UTC")
    seg_name = definition.get("test_segment")
    workflow.test_segment = Segment.objects.filter(name=seg_name).first() if seg_name else None
    if seg_name and workflow.test_segment is None:
        raise ValidationError(f"{workflow.key}: test segment {seg_name!r} does not exist")
    workflow.full_clean()
    workflow.save()


def version_create_draft(*, workflow: Workflow, definition: dict[str, Any], actor: Any,
                         revisions: dict[str, Any] | None = None) -> WorkflowVersion:
    """A new draft (editing a non-draft always goes through here). Must validate. It pins a
    revision of every template it sends: `revisions` (key -> revision) where given, else each
    template's current content."""
    issues = d.validate_workflow(definition, known_templates=_known_templates())
    if issues:
        raise ValidationError([str(i) for i in issues])
    if definition.get("key") != workflow.key:
        raise ValidationError(f"the definition's key {definition.get('key')!r} is not {workflow.key!r}")
    pins = _revisions_for(d.template_keys(definition), revisions or {}, actor)
    version = WorkflowVersion(workflow=workflow, number=_next_number(workflow), definition=definition,
                              author=_user(actor))
    version.full_clean()
    version.save()
    TemplatePin.objects.bulk_create([TemplatePin(version=version, template_id=r.template_id, revision=r)
                                     for _, r in sorted(pins.items())])
    audit_record(actor=actor, action="workflow.draft_created", target=version, data={
        "number": version.number, "revisions": {k: r.number for k, r in sorted(pins.items())}})
    return version


def version_draft_with_latest_templates(*, workflow: Workflow, actor: Any) -> WorkflowVersion:
    """A new draft of the newest definition pinning each template's current content (after
    template edits in the admin). Nothing changes in production until it is promoted."""
    latest = workflow.versions.order_by("-number").first()
    if latest is None:
        raise ValidationError("the workflow has no version to start from")
    wanted = _revisions_for(d.template_keys(latest.definition), {}, actor)
    if {k: r.pk for k, r in version_pins(version=latest).items()} == {k: r.pk for k, r in wanted.items()}:
        raise ValidationError(f"v{latest.number} already pins the templates' current content")
    return version_create_draft(workflow=workflow, definition=latest.definition, actor=actor, revisions=wanted)


def templates_newer_than_pinned(*, version: WorkflowVersion | None) -> dict[str, tuple[Any, Any]]:
    """Template key -> (pinned revision, the template's current revision) where they differ."""
    from campaigns.models import EmailTemplate, EmailTemplateRevision, template_content_hash

    if version is None:
        return {}
    pinned = version_pins(version=version)
    newer: dict[str, tuple[Any, Any]] = {}
    for template in EmailTemplate.objects.filter(key__in=d.template_keys(version.definition)):
        digest = template_content_hash(kind=template.kind, subject=template.subject, html=template.html,
                                       text=template.text, topic_id=template.topic_id)
        old = pinned.get(template.key)
        if old is None or old.content_hash != digest:
            current = EmailTemplateRevision.objects.filter(template=template, content_hash=digest).first()
            newer[template.key] = (old, current)
    return newer


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


@dataclass
class ImportResult:
    versions: list[WorkflowVersion] = field(default_factory=list)
    unchanged: list[WorkflowVersion] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)


@transaction.atomic
def workflow_import(*, text: str, actor: Any, to: str = VersionState.DRAFT) -> ImportResult:
    """Import a file: templates created/updated, and per workflow a new draft (or, with
    to="staging", a staged version). A workflow whose newest version already equals the file's
    definition gets no new version (CI can import the same file again); with to="staging" that
    version is staged if it is a draft. Raises ValidationError listing every problem."""
    data = d.parse_text(text)
    issues = d.validate_file(data, known_templates=_known_templates())
    if issues:
        raise ValidationError([str(i) for i in issues])
    revisions, changed = _import_templates(data["templates"], actor)
    result = ImportResult(templates=changed)
    for definition in data["workflows"]:
        workflow, _ = Workflow.objects.get_or_create(key=definition["key"], defaults={"name": definition["name"]})
        latest = workflow.versions.order_by("-number").first()
        # Content is part of the version: the same steps with a changed template are a new version.
        pins = _revisions_for(d.template_keys(definition), revisions, actor)
        if latest is not None and latest.definition == definition and \
                {k: r.pk for k, r in version_pins(version=latest).items()} == {k: r.pk for k, r in pins.items()}:
            version = latest
            result.unchanged.append(version)
        else:
            _sync_workflow_fields(workflow, definition)
            version = version_create_draft(workflow=workflow, definition=definition, actor=actor, revisions=pins)
            result.versions.append(version)
        if to == VersionState.STAGING and version.state == VersionState.DRAFT:
            workflow_stage(version=version, actor=actor)
    audit_record(actor=actor, action="workflow.imported", target=("automation.workflow", None),
                 data={"created": [str(v) for v in result.versions], "unchanged": [str(v) for v in result.unchanged],
                       "templates": result.templates})
    return result


def _import_templates(templates: list[dict[str, Any]], actor: Any) -> tuple[dict[str, Any], list[str]]:
    """The file's templates as revisions (key -> revision) and the keys whose content changed. A
    template's fields (its working copy) take the file's content; versions pin the revisions, so
    production sends none of it before a promotion."""
    from campaigns.models import EmailTemplate
    from campaigns.revisions import template_revision_current, template_save

    revisions: dict[str, Any] = {}
    changed = []
    for spec in templates:
        # Content the file leaves out takes its default, so the file says all a revision holds.
        fields = {"kind": "marketing", "text": "",
                  **{k: v for k, v in spec.items() if k in d.TEMPLATE_KEYS and k != "key"}}
        template = EmailTemplate.objects.filter(key=spec["key"]).first() or EmailTemplate(key=spec["key"])
        if all(getattr(template, k) == v for k, v in fields.items()) and template.pk:
            revisions[template.key] = template_revision_current(template=template, actor=actor, source="import")
            continue
        for k, v in fields.items():
            setattr(template, k, v)
        revisions[template.key] = template_save(template=template, actor=actor, source="import")
        changed.append(template.key)
    return revisions, changed


def _locked(workflow: Workflow) -> Workflow:
    return Workflow.objects.select_for_update().get(pk=workflow.pk)


@transaction.atomic
def workflow_stage(*, version: WorkflowVersion, actor: Any) -> WorkflowVersion:
    """Draft -> staging (the previous staging version is archived; its test runs finish on it)."""
    _locked(version.workflow)
    version.refresh_from_db()
    if version.state != VersionState.DRAFT:
        raise ValidationError(f"only a draft can be staged; v{version.number} is {version.state}")
    issues = version_issues(version=version)
    if issues:
        raise ValidationError([str(i) for i in issues])
    previous = WorkflowVersion.objects.filter(workflow=version.workflow, state=VersionState.STAGING).first()
    if previous is not None:
        WorkflowVersion.objects.filter(pk=previous.pk, state=VersionState.STAGING).update(state=VersionState.ARCHIVED)
    if WorkflowVersion.objects.filter(pk=version.pk, state=VersionState.DRAFT).update(state=VersionState.STAGING) != 1:
        raise ValidationError("the version changed meanwhile; reload")
    version.state = VersionState.STAGING
    audit_record(actor=actor, action="workflow.staged", target=version,
                 data={"number": version.number, "archived": previous.number if previous else None})
    return version


def can_promote(*, actor: Any, version: WorkflowVersion) -> str:
    """Why `actor` may not promote `version` ("" when they may). A string actor is manage.py (CI):
    shell access to the deployment is the authority there, and the audit entry names it. With a
    second person required, neither the version's author nor the author of any template revision
    it would change in production may promote it: approval covers what is sent."""
    if isinstance(actor, str):
        return ""
    if not getattr(actor, "has_perm", None) or not actor.has_perm("automation.promote_workflow"):
        return "promoting needs the automation.promote_workflow permission (Approver role)"
    if not getattr(settings, "WORKFLOW_PROMOTE_SECOND_PERSON", False):
        return ""
    if version.author_id == actor.pk:
        return "a different person than the author must promote this version (WORKFLOW_PROMOTE_SECOND_PERSON)"
    production = WorkflowVersion.objects.filter(workflow_id=version.workflow_id, state=VersionState.PRODUCTION) \
        .exclude(pk=version.pk).first()
    live = {k: r.pk for k, r in version_pins(version=production).items()}
    mine = sorted(f"{r}" for k, r in version_pins(version=version).items()
                  if live.get(k) != r.pk and r.created_by_id == actor.pk)
    if mine:
        return (f"a different person than the author of {', '.join(mine)} must promote this version "
                "(WORKFLOW_PROMOTE_SECOND_PERSON)")
    return ""


@dataclass
class MigrationPreview:
    """What migrating the live production enrollments from one version to another would do."""

    moved: dict[str, int] = field(default_factory=dict)  # step id (exists in both) -> contacts
    kept: dict[str, int] = field(default_factory=dict)  # step id removed in the new version -> contacts

    @property
    def moved_total(self) -> int:
        return sum(self.moved.values())

    @property
    def kept_total(self) -> int:
        return sum(self.kept.values())


def migration_preview(*, source: WorkflowVersion | None, target: WorkflowVersion) -> MigrationPreview:
    """Contacts sitting on each step of `source`: those whose step exists in `target` (matched by
    id) would move; those on removed steps stay on their pinned version and finish it."""
    preview = MigrationPreview()
    if source is None:
        return preview
    target_ids = set(d.step_map(target.steps))
    rows = Enrollment.objects.filter(version=source, status__in=LIVE_STATUSES, is_staging=False) \
        .values_list("step_id").annotate(n=Count("id"))
    for step_id, n in rows:
        (preview.moved if step_id in target_ids else preview.kept)[step_id] = n
    return preview


def _migrate(source: WorkflowVersion, target: WorkflowVersion, now: dt.datetime) -> int:
    target_ids = list(d.step_map(target.steps))
    return Enrollment.objects.filter(version=source, status__in=LIVE_STATUSES, is_staging=False,
                                     step_id__in=target_ids).update(version=target, updated_at=now)


class CapacityNotAcknowledged(ValidationError):
    """The capacity check found limits the version would pass, and nobody acknowledged them."""


@transaction.atomic
def workflow_promote(*, workflow: Workflow, actor: Any, migrate: bool = False,
                     acknowledge_capacity: bool = False) -> WorkflowVersion:
    """Staging -> production in one transaction; the previous production version is archived.
    In-flight enrollments stay pinned unless `migrate` (steps matched by id; see migration_preview).
    When the capacity check (automation.capacity) finds a limit the version would pass, promoting
    needs `acknowledge_capacity`; the acknowledgement is audited with the figures."""
    from automation.capacity import capacity_check

    _locked(workflow)
    staging = WorkflowVersion.objects.filter(workflow=workflow, state=VersionState.STAGING).first()
    if staging is None:
        raise ValidationError("there is no staging version to promote")
    why = can_promote(actor=actor, version=staging)
    if why:
        raise PermissionDenied(why)
    report = capacity_check(version=staging)
    if report.over and not acknowledge_capacity:
        raise CapacityNotAcknowledged(f"v{staging.number} would pass {', '.join(report.over)}: promoting needs an "
                                      "explicit acknowledgement of the capacity check")
    version = _make_production(workflow, staging, actor=actor, migrate=migrate, action="workflow.promoted")
    if report.over:
        audit_record(actor=actor, action="workflow.capacity_acknowledged", target=version,
                     data={"number": version.number, "over": report.over, "capacity": report.as_dict()})
    return version


@transaction.atomic
def workflow_rollback(*, workflow: Workflow, actor: Any, migrate: bool = False) -> WorkflowVersion:
    """Re-promote the version that was production before the current one."""
    _locked(workflow)
    current = WorkflowVersion.objects.filter(workflow=workflow, state=VersionState.PRODUCTION).first()
    previous = rollback_target(workflow=workflow)
    if current is None or previous is None:
        raise ValidationError("there is no earlier production version to roll back to")
    return _make_production(workflow, previous, actor=actor, migrate=migrate, action="workflow.rolled_back")


def rollback_target(*, workflow: Workflow) -> WorkflowVersion | None:
    return WorkflowVersion.objects.filter(workflow=workflow, state=VersionState.ARCHIVED,
                                          promoted_at__isnull=False).order_by("-promoted_at", "-number").first()


def _make_production(workflow: Workflow, version: WorkflowVersion, *, actor: Any, migrate: bool,
                     action: str) -> WorkflowVersion:
    why = can_promote(actor=actor, version=version)
    if why:
        raise PermissionDenied(why)
    issues = version_issues(version=version)
    if issues:
        raise ValidationError([str(i) for i in issues])
    now = timezone.now()
    current = WorkflowVersion.objects.filter(workflow=workflow, state=VersionState.PRODUCTION).first()
    preview = migration_preview(source=current, target=version) if migrate else MigrationPreview()
    if current is not None:  # archive first: the partial unique index allows one production row
        WorkflowVersion.objects.filter(pk=current.pk).update(state=VersionState.ARCHIVED)
    old_state = version.state
    if WorkflowVersion.objects.filter(pk=version.pk, state=old_state).update(
            state=VersionState.PRODUCTION, promoted_by=_user(actor), promoted_at=now, replaced=current) != 1:
        raise ValidationError("the version changed meanwhile; reload")
    moved = _migrate(current, version, now) if migrate and current is not None else 0
    version.refresh_from_db()
    audit_record(actor=actor, action=action, target=version, data={
        "number": version.number, "from_state": old_state, "previous": current.number if current else None,
        "migrate": migrate, "moved": moved, "kept_on_removed_steps": preview.kept})
    return version


@transaction.atomic
def workflow_set_paused(*, workflow: Workflow, paused: bool, actor: Any) -> Workflow:
    """Pause holds every enrollment where it is and admits no one; resuming lets the scheduler
    wake those that came due meanwhile."""
    if Workflow.objects.filter(pk=workflow.pk).exclude(paused=paused).update(paused=paused, updated_at=timezone.now()):
        audit_record(actor=actor, action="workflow.paused" if paused else "workflow.resumed", target=workflow)
    workflow.refresh_from_db()
    return workflow


# --- Export ------------------------------------------------------------------------------------------


def export_version(*, workflow: Workflow, state: str | None = None) -> WorkflowVersion | None:
    versions = workflow.versions.order_by("-number")
    return versions.filter(state=state).first() if state else versions.first()


def workflows_export(*, keys: Sequence[str] = (), state: str | None = None, fmt: str = "yaml") -> str:
    """A file with the chosen version (newest, or the one in `state`) of each workflow and the
    templates they use; importing it creates nothing new (round trip)."""
    workflows = Workflow.objects.order_by("key")
    if keys:
        workflows = workflows.filter(key__in=keys)
        missing = set(keys) - set(workflows.values_list("key", flat=True))
        if missing:
            raise ValidationError(f"unknown workflow(s): {', '.join(sorted(missing))}")
    versions = [v for w in workflows if (v := export_version(workflow=w, state=state))]
    return d.dump_text({"templates": _templates_of(versions), "workflows": [v.definition for v in versions]},
                       fmt=fmt)


def version_export(*, version: WorkflowVersion) -> str:
    """One version (any state) as a file, with the template revisions it pins."""
    return d.dump_text({"templates": _templates_of([version]), "workflows": [version.definition]})


def _templates_of(versions: Sequence[WorkflowVersion]) -> list[dict[str, Any]]:
    """The content each version pins (not the templates' current drafts), one entry per key. Two
    versions pinning different revisions of one template cannot share a file; refused by name."""
    specs: dict[str, dict[str, Any]] = {}
    for version in versions:
        for key, revision in version_pins(version=version).items():
            spec = _template_spec(revision.template, revision)
            if specs.setdefault(key, spec) != spec:
                raise ValidationError(f"template {key!r}: the exported versions pin different revisions; "
                                      "export those workflows one at a time")
    return [specs[k] for k in sorted(specs)]


def _template_spec(template: Any, revision: Any) -> dict[str, Any]:
    spec = {"key": template.key}
    for name in ("name", "kind", "subject", "html", "text"):
        value = getattr(template if name == "name" else revision, name)
        if value and not (name == "kind" and value == "marketing"):
            spec[name] = value
    return spec


# --- Editing drafts (the admin's editor) ------------------------------------------------------------


def version_draft_edit(*, version: WorkflowVersion, actor: Any) -> WorkflowVersion:
    """The draft to edit for `version`: itself when it is a draft, else a new draft with the same
    definition and pins (a version that ran or was staged never changes)."""
    if version.state == VersionState.DRAFT:
        return version
    with transaction.atomic():
        _locked(version.workflow)
        draft = WorkflowVersion(workflow=version.workflow, number=_next_number(version.workflow),
                                definition=version.definition, author=_user(actor))
        draft.full_clean()
        draft.save()
        pins = version_pins(version=version)
        TemplatePin.objects.bulk_create([TemplatePin(version=draft, template_id=r.template_id, revision=r)
                                         for _, r in sorted(pins.items())])
        audit_record(actor=actor, action="workflow.draft_created", target=draft, data={
            "number": draft.number, "from": version.number,
            "revisions": {k: r.number for k, r in sorted(pins.items())}})
    return draft


def _draft_locked(version: WorkflowVersion) -> WorkflowVersion:
    locked = WorkflowVersion.objects.select_for_update().select_related("workflow").get(pk=version.pk)
    if locked.state != VersionState.DRAFT:
        raise ValidationError(f"only a draft can be edited; v{locked.number} is {locked.state} "
                              "(editing it makes a new draft)")
    return locked


@transaction.atomic
def version_draft_update(*, version: WorkflowVersion, definition: dict[str, Any], actor: Any) -> list[d.Issue]:
    """Save an edited definition into a draft and return its validation issues (by step id). An
    invalid draft is kept so work is not lost, but workflow_stage refuses it listing every issue.
    Templates stay pinned to the revision the draft had; newly used ones pin their current content,
    ones no longer used are unpinned."""
    draft = _draft_locked(version)
    if not isinstance(definition, dict) or not isinstance(definition.get("steps"), list) \
            or not all(isinstance(s, dict) for s in definition["steps"]):
        raise ValidationError("the definition needs a `steps:` list of mappings")
    if definition.get("key") != draft.workflow.key:
        raise ValidationError(f"the definition's key {definition.get('key')!r} is not {draft.workflow.key!r}")
    issues = d.validate_workflow(definition, known_templates=_known_templates())
    draft.definition = definition
    draft.save(update_fields=["definition"])
    keys = d.template_keys(definition)
    pinned = version_pins(version=draft)
    TemplatePin.objects.filter(version=draft).exclude(template__key__in=keys).delete()
    new = _revisions_for(keys - set(pinned), {}, actor)
    TemplatePin.objects.bulk_create([TemplatePin(version=draft, template_id=r.template_id, revision=r)
                                     for _, r in sorted(new.items())])
    version.definition = definition
    audit_record(actor=actor, action="workflow.draft_edited", target=draft,
                 data={"number": draft.number, "issues": len(issues), "pinned": sorted(new)})
    return issues


@transaction.atomic
def version_draft_template_save(*, version: WorkflowVersion, key: str, fields: dict[str, str], actor: Any) -> Any:
    """Edit the content of a template the draft sends: a new revision (campaigns.revisions) that
    this draft pins. Production keeps its own pinned revision until this draft is promoted."""
    from campaigns.models import EmailTemplate
    from campaigns.revisions import template_save

    draft = _draft_locked(version)
    if key not in d.template_keys(draft.definition):
        raise ValidationError(f"v{draft.number} sends no template {key!r}")
    template = EmailTemplate.objects.filter(key=key).first()
    if template is None:
        raise ValidationError(f"template {key!r} does not exist")
    for name in ("subject", "html", "text"):
        if name in fields:
            setattr(template, name, fields[name])
    revision = template_save(template=template, actor=actor, source="workflow-editor")
    TemplatePin.objects.update_or_create(version=draft, template=template, defaults={"revision": revision})
    audit_record(actor=actor, action="workflow.draft_template_pinned", target=draft,
                 data={"number": draft.number, "template": key, "revision": revision.number})
    return revision
