"""Workflow test helpers: an SMTP sink and sender (from campaigns' fixtures), a file builder,
events run through the real pipeline, and a step runner that advances everything due."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from django.utils import timezone

from automation import engine
from automation.models import LIVE_STATUSES, Enrollment, Workflow, WorkflowVersion
from automation.services import workflow_import, workflow_promote, workflow_stage
from campaigns.models import SenderProfile
from campaigns.tests.conftest import make_contact, make_template
from contacts.models import Contact, Event
from contacts.pipeline import events_process
from core.queues import get_connection
from core.testing.smtpsink import SmtpSink

__all__ = ["make_contact", "make_template"]

ISSUE_EXAMPLE = """\
templates:            # optional: email templates the workflows use, by key
  - key: webinar-welcome
    subject: "See you at the webinar, {{ contact.first_name|default:'there' }}"
    html: "<p>...</p>"
  - key: webinar-thanks
    subject: "Thanks for coming"
    html: "<p>Thanks</p>"
  - key: webinar-replay
    subject: "The replay"
    html: "<p>Replay</p>"
workflows:
  - key: webinar-welcome
    name: Webinar welcome
    trigger: {type: event, event: webinar_registered}   # also: segment_entered, score_reached, manual
    reentry: once                                       # once | always | after: 30d
    goal: {event: demo_booked}                          # optional: reaching it exits the contact
    steps:
      - {id: welcome, type: send_email, template: webinar-welcome}
      - {id: sync, type: crm_sync}
      - {id: wait, type: wait, duration: 2d}
      - {id: attended, type: branch, if: {event: webinar_attended, within: 7d}, then: thanks, else: replay}
      - {id: thanks, type: send_email, template: webinar-thanks, next: end}
      - {id: replay, type: send_email, template: webinar-replay}
"""


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as smtp:
        yield smtp


@pytest.fixture
def sender(db: None, sink: SmtpSink) -> SenderProfile:
    return SenderProfile.objects.create(name="Main", from_email="news@leadflow.test", from_name="Leadflow",
                                        email_url=sink.url, rate="1000/s", burst=100, is_default=True,
                                        postal_address="1 Example Street", staging_recipient="qa@leadflow.test")


def wf_file(key: str = "nurture", *, steps: list[dict[str, Any]], trigger: dict[str, Any] | None = None,
            templates: list[str] = (), **extra: Any) -> str:  # type: ignore[assignment]
    workflow = {"key": key, "name": key.title(), **{k: v for k, v in extra.items() if k in ("timezone",
                                                                                              "test_segment")},
                "trigger": trigger or {"type": "event", "event": "signed_up"},
                **{k: v for k, v in extra.items() if k not in ("timezone", "test_segment")}, "steps": steps}
    data: dict[str, Any] = {"workflows": [workflow]}
    if templates:
        data["templates"] = [{"key": t, "subject": f"{t} for {{{{ contact.first_name }}}}", "html": f"<p>{t}</p>"}
                             for t in templates]
    return yaml.safe_dump(data, sort_keys=False)


def deploy(text: str, *, actor: Any = "test", stage_only: bool = False) -> Workflow:
    """Import and put into production (or only staging)."""
    result = workflow_import(text=text, actor=actor, to="staging")
    version = (result.versions or result.unchanged)[0]
    if not stage_only:
        workflow_promote(workflow=version.workflow, actor="test")
    return Workflow.objects.get(pk=version.workflow_id)


def version(workflow: Workflow, state: str) -> WorkflowVersion:
    return WorkflowVersion.objects.get(workflow=workflow, state=state)


def emit(contact: Contact, event_type: str, *, key: str | None = None, at: dt.datetime | None = None,
         **properties: Any) -> Event:
    """Store an event as the API does and run the pipeline job on it (in this transaction)."""
    event = Event.objects.create(contact=contact, event_type=event_type, properties=properties,
                                 occurred_at=at or timezone.now(), source="api:test", idempotency_key=key)
    events_process(event_ids=[event.pk])
    return event


def advance(now: dt.datetime | None = None) -> None:
    """Run every live enrollment that is due, repeatedly, as advance jobs would (in batches)."""
    now = now or timezone.now()
    for _ in range(5):
        due = Enrollment.objects.filter(status__in=LIVE_STATUSES, next_run_at__lte=now + engine.LEASE)
        ids = list(due.values_list("pk", flat=True))
        if not ids:
            return
        engine.enrollments_advance(enrollment_ids=ids, now=now)  # the set-based batches jobs run


def stage(text: str) -> WorkflowVersion:
    result = workflow_import(text=text, actor="test")
    return workflow_stage(version=result.versions[0], actor="test")
