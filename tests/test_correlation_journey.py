"""Following one event (docs/architecture.md): the X-Request-ID of the API call that posted it is
the correlation id of the Event, the Enrollment it triggers, the StepRuns and the Message of that
enrollment and the CRM sync row its `crm_sync` step queues, and every worker's log line about
those rows carries it, whether it is the line's own id or, in a batch mixing two callers, the key
its rows are listed under. Real Redis, real jobs (in-process workers in burst mode), a real SMTP
sink and the loopback fake HubSpot; an admin finds every row by searching for the id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from rq import SimpleWorker

from automation.crm.fakes import FakeHubSpot
from automation.crm.models import CrmConnection, CrmSyncItem, SyncStatus
from automation.crm.services import throttle_for
from automation.crm.vault import encrypt
from automation.models import Enrollment, EnrollmentStatus, StepRun
from automation.services import workflow_import, workflow_promote
from campaigns.models import Message, MessageStatus
from conftest import make_user
from contacts.apikeys import api_key_create
from contacts.models import Contact, Event
from core.logs import CorrelationFilter, JsonFormatter
from core.queues import get_connection, get_queue

pytestmark = pytest.mark.django_db(transaction=True)

ANN_REQUEST = "req-ann-0001"
BOB_REQUEST = "req-bob-0002"

WORKFLOW = """\
templates:
  - key: welcome
    kind: transactional
    subject: "Welcome, {{ contact.first_name|default:'there' }}"
    html: "<p>Hello</p>"
workflows:
  - key: welcome
    name: Welcome
    trigger: {type: event, event: signed_up}
    steps:
      - {id: hello, type: send_email, template: welcome}
      - {id: sync, type: crm_sync}
"""


class Captured(logging.Handler):
    """The JSON lines the production handler would write (same filter, same formatter)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.addFilter(CorrelationFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    fake = FakeHubSpot().start()
    yield fake
    fake.stop()


def run_jobs() -> None:
    """What the workers do, in this process: every queue in burst mode until all are empty."""
    queues = [get_queue(name) for name in ("events", "default", "delivery", "crm")]
    for _ in range(10):
        SimpleWorker(queues, connection=queues[0].connection).work(burst=True)
        if not any(queue.count for queue in queues):
            return
    raise AssertionError("the queues did not drain")


def rows_logged(lines: list[dict[str, Any]], message: str, key: str, correlation_id: str) -> list[int]:
    """The row ids (under `key`) that lines with this message attribute to `correlation_id`: a
    line's own id when its rows share one, else the list under that id in `correlation_ids`."""
    found: list[int] = []
    for line in lines:
        if line["message"] != message:
            continue
        if "correlation_ids" in line:
            found += line["correlation_ids"].get(correlation_id, [])
        elif line.get("correlation_id") == correlation_id:
            found += line[key]
    return found


def post_event(raw_key: str, email: str, request_id: str) -> Any:
    return Client().post("/api/v1/events", {"events": [{"email": email, "type": "signed_up"}]},
                         content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw_key}",
                         HTTP_X_REQUEST_ID=request_id)


def test_one_request_id_follows_an_event_to_its_enrollment_email_and_crm_row(
        sender: Any, sink: Any, hubspot: FakeHubSpot, captured: Captured) -> None:
    get_connection().flushdb()
    # given a production workflow that emails and syncs to the CRM, and a connection to it
    version = workflow_import(text=WORKFLOW, actor="test", to="staging").versions[0]
    workflow_promote(workflow=version.workflow, actor="test")
    conn = CrmConnection.objects.create(name="hubspot", kind=CrmConnection.Kind.HUBSPOT, base_url=hubspot.url,
                                        field_mapping={"first_name": "firstname"}, rate_limit="1000/s",
                                        token_encrypted=encrypt("fake-token"))
    throttle_for(conn).reset()
    _, raw = api_key_create(name="website")

    # when two API calls, each with its own X-Request-ID, post an event for two people
    for email, request_id in (("ann@example.com", ANN_REQUEST), ("bob@example.com", BOB_REQUEST)):
        response = post_event(raw, email, request_id)
        assert response.status_code == 202, response.content
        assert response["X-Request-ID"] == request_id
    # and the workers run everything that follows
    run_jobs()

    for email, request_id in (("ann@example.com", ANN_REQUEST), ("bob@example.com", BOB_REQUEST)):
        contact = Contact.objects.get(email=email)
        # then every row the event caused carries the id of the request that posted it
        event = Event.objects.get(contact=contact, event_type="signed_up")
        enrollment = Enrollment.objects.get(contact=contact)
        message = Message.objects.get(contact=contact)
        item = CrmSyncItem.objects.get(contact=contact, connection=conn)
        assert event.correlation_id == request_id
        assert (enrollment.trigger_event_id, enrollment.correlation_id) == (event.pk, request_id)
        assert enrollment.status == EnrollmentStatus.COMPLETED
        assert sorted(StepRun.objects.filter(enrollment=enrollment).values_list("step_id", "correlation_id")) == [
            ("hello", request_id), ("sync", request_id)]
        assert (message.correlation_id, message.status) == (request_id, MessageStatus.SENT)
        assert (item.correlation_id, item.status) == (request_id, SyncStatus.SYNCED)
        assert hubspot.stats.upserts[email] >= 1

        # and each stage's log lines name this row under this id (and not the other person's)
        lines = captured.lines
        assert rows_logged(lines, "events accepted", "event_ids", request_id) == [event.pk]
        assert rows_logged(lines, "events processed", "event_ids", request_id) == [event.pk]
        assert rows_logged(lines, "enrollments created", "enrollment_ids", request_id) == [enrollment.pk]
        assert rows_logged(lines, "messages queued", "message_ids", request_id) == [message.pk]
        assert rows_logged(lines, "delivery batch", "sent_message_ids", request_id) == [message.pk]
        assert contact.pk in rows_logged(lines, "crm rows queued", "contact_ids", request_id)
        assert rows_logged(lines, "crm batch", "crm_item_ids", request_id) == [item.pk]
    assert sorted(to for received in sink.received for to in received.rcpt_tos) == [
        "ann@example.com", "bob@example.com"]

    # and an admin following one id finds exactly that person's rows, each showing the id
    admin = Client()
    admin.force_login(make_user("root", None, superuser=True))
    ann = Contact.objects.get(email="ann@example.com")
    for changelist, row in (
        ("/admin/contacts/event/", Event.objects.get(contact=ann)),
        ("/admin/automation/enrollment/", Enrollment.objects.get(contact=ann)),
        ("/admin/campaigns/message/", Message.objects.get(contact=ann)),
        ("/admin/crm/crmsyncitem/", CrmSyncItem.objects.get(contact=ann)),
    ):
        found = admin.get(changelist, {"q": ANN_REQUEST})
        assert found.status_code == 200
        assert list(found.context["cl"].result_list) == [row], changelist
        assert not list(admin.get(changelist, {"q": "req-ann"}).context["cl"].result_list)  # exact match only
        page = admin.get(f"{changelist}{row.pk}/change/").content.decode()
        assert ANN_REQUEST in page, changelist
