"""What failed, on the operations page: workflows whose step failure rate jumped (last hour against
the 24 hours before), segments whose refresh failed (recorded by the segment jobs, cleared by the
next success) and imports that failed, each linking to the rows behind it."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterator

import pytest
from django.test import Client
from django.utils import timezone
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry

from automation.models import Enrollment, EnrollmentStatus, StepRun, StepRunStatus, Workflow, WorkflowVersion
from contacts.models import Contact, CustomField, ImportJob, Segment
from contacts.segments.tasks import segment_refresh_job, segments_refresh_all_job
from core import ops
from core.queues import get_connection
from core.testing.html import html_section

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)
OK, FAILED, RETRYING = StepRunStatus.SUCCEEDED, StepRunStatus.FAILED, StepRunStatus.RETRYING


@pytest.fixture(autouse=True)
def empty_redis() -> Iterator[None]:
    get_connection().flushdb()
    yield
    get_connection().flushdb()


# --- workflows whose failure rate jumped ---------------------------------------------------------------------

class Runs:
    """Step runs of one workflow, made directly: (status, when its outcome was recorded)."""

    def __init__(self, key: str, *, versions: int = 1) -> None:
        self.workflow = Workflow.objects.create(key=key, name=key.replace("-", " ").title())
        self.versions = [WorkflowVersion.objects.create(workflow=self.workflow, number=n + 1, definition={})
                         for n in range(versions)]
        contact = Contact.objects.create(email=f"{key}@example.com")
        self.enrollment = Enrollment.objects.create(contact=contact, workflow=self.workflow, version=self.versions[0],
                                                    status=EnrollmentStatus.COMPLETED, entered_at=timezone.now())
        self.made = 0

    def add(self, count: int, status: str, at: dt.datetime, *, version: int = 0) -> None:
        retrying = status == RETRYING  # waits for its retry: no finished_at, its first attempt's start only
        StepRun.objects.bulk_create(
            StepRun(enrollment=self.enrollment, version=self.versions[version], step_id="s", step_type="crm_sync",
                    status=status, idempotency_key=f"{self.workflow.key}-run-{self.made + i}",
                    started_at=at - dt.timedelta(seconds=5), finished_at=None if retrying else at)
            for i in range(count))
        self.made += count


@pytest.fixture
def workflows() -> dict[str, Runs]:
    now = timezone.now()
    recent, day = now - dt.timedelta(minutes=10), now - 5 * HOUR
    # 2 % failed over the day, 30 % in the last hour (over two versions); failures 30 h ago do not count
    jumped = Runs("jumped", versions=2)
    jumped.add(98, OK, day)
    jumped.add(2, FAILED, day)
    jumped.add(14, OK, recent)
    jumped.add(3, FAILED, recent)
    jumped.add(3, FAILED, recent, version=1)
    jumped.add(30, FAILED, now - 30 * HOUR)
    # always 40 %: bad, but not a jump
    steady = Runs("steady")
    steady.add(60, OK, day)
    steady.add(40, FAILED, day)
    steady.add(12, OK, recent)
    steady.add(8, FAILED, recent)
    # 100 % of 3: too few failures to call
    few = Runs("few")
    few.add(3, FAILED, recent)
    # 3 % in the last hour after a clean day: a rise, under the 10 % floor
    low = Runs("low-rate")
    low.add(200, OK, day)
    low.add(194, OK, recent)
    low.add(6, FAILED, recent)
    # new, with failed attempts still waiting to retry: they count as failures
    retrying = Runs("retrying")
    retrying.add(5, OK, recent)
    retrying.add(5, RETRYING, recent)
    return {"jumped": jumped, "steady": steady, "few": few, "low": low, "retrying": retrying}


def test_only_workflows_whose_failure_rate_jumped_are_listed_worst_first(workflows, django_assert_num_queries):  # noqa: ANN001
    with django_assert_num_queries(2):  # one grouped query for the rates, one for the versions to link
        jumps = ops.workflow_failure_jumps()
    assert [j.name for j in jumps] == ["Retrying", "Jumped"]
    retrying, jumped = jumps
    assert (retrying.recent_failed, retrying.recent_total, retrying.baseline_total) == (5, 10, 0)
    assert (jumped.recent_failed, jumped.recent_total, jumped.baseline_failed, jumped.baseline_total) == (6, 20, 2, 100)
    assert jumped.version_ids == [v.pk for v in workflows["jumped"].versions]


def test_the_jump_rule_takes_each_threshold_at_its_bound() -> None:
    def jump(recent_failed: int, recent_total: int, baseline_failed: int, baseline_total: int) -> bool:
        return ops.WorkflowJump(1, "w", recent_failed, recent_total, baseline_failed, baseline_total).jumped

    assert jump(5, 50, 0, 0)  # 5 failures, 10 %, no baseline
    assert not jump(4, 40, 0, 0)  # one failure short
    assert not jump(5, 51, 0, 0)  # just under 10 %
    assert jump(10, 20, 25, 100)  # 50 % is twice 25 %
    assert not jump(10, 20, 26, 100)  # not quite twice


def test_the_operations_page_links_a_jumped_workflow_to_its_failed_step_runs(client: Client, role_users,  # noqa: ANN001
                                                                              workflows) -> None:  # noqa: ANN001
    client.force_login(role_users["ops"])
    page = client.get("/admin/operations/").content.decode()
    table = html_section(page, 'id="workflow-jumps"', "</table>")
    assert "Jumped" in table
    assert "6 of 20 failed (30 %)" in table
    assert "2 of 100 (2 %)" in table
    assert "Steady" not in table
    assert "Few" not in table
    assert "Low Rate" not in table
    link = html.unescape(table.split('<a href="')[2].split('"')[0])  # the second row: Jumped
    versions = ",".join(str(v.pk) for v in workflows["jumped"].versions)
    assert link == f"/admin/automation/steprun/?status__in=failed,retrying&version__in={versions}"
    # the link opens (for ops) the admin's step runs, this workflow's failed ones only
    response = client.get(link)
    assert response.status_code == 200
    listing = response.content.decode()
    assert "jumped-run-98<" in listing  # failed, over the day
    assert "jumped-run-0<" not in listing  # succeeded
    assert "steady-run-" not in listing


# --- segments whose refresh failed --------------------------------------------------------------------------

def test_refresh_all_records_a_failing_segment_and_clears_it_once_it_refreshes(client: Client, role_users) -> None:  # noqa: ANN001
    # given a segment on a custom field, and one on a tag
    CustomField.objects.create(key="plan", label="Plan")
    plan = Segment.objects.create(name="Plan set", definition={"attribute": "plan", "op": "is_set"})
    vips = Segment.objects.create(name="VIPs", definition={"tag": "vip"})
    # when the field is deleted and the periodic refresh runs
    CustomField.objects.all().delete()
    segments_refresh_all_job()
    # then the broken segment carries the failure, the other does not
    plan.refresh_from_db()
    vips.refresh_from_db()
    assert plan.refresh_failed_at is not None
    assert "unknown custom field 'plan'" in plan.refresh_error
    assert (vips.refresh_failed_at, vips.refresh_error) == (None, "")
    # and the operations page lists it with its error and a link to it
    client.force_login(role_users["ops"])
    page = client.get("/admin/operations/").content.decode()
    table = html_section(page, 'id="failed-segments"', "</table>")
    assert f'href="/admin/contacts/segment/{plan.pk}/change/"' in table
    assert "unknown custom field &#x27;plan&#x27;" in table
    assert "VIPs" not in table
    assert client.get(f"/admin/contacts/segment/{plan.pk}/change/").status_code == 200  # ops may follow it
    # when the field is back, the next refresh clears the failure
    CustomField.objects.create(key="plan", label="Plan")
    segments_refresh_all_job()
    plan.refresh_from_db()
    assert (plan.refresh_failed_at, plan.refresh_error) == (None, "")
    page = client.get("/admin/operations/").content.decode()
    assert "Plan set" not in page[page.index('id="failed-segments"'):]


def test_the_refresh_job_fails_in_rq_and_records_why_then_a_success_clears_it() -> None:
    # given a segment whose custom field was deleted, its refresh queued
    CustomField.objects.create(key="plan", label="Plan")
    plan = Segment.objects.create(name="Plan set", definition={"attribute": "plan", "op": "is_set"})
    CustomField.objects.all().delete()
    queue = Queue("default", connection=get_connection())  # plain RQ: no wait for a COMMIT
    queue.enqueue(segment_refresh_job, plan.pk)
    # when a worker runs it
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    # then the job failed in RQ (a dead letter, with the traceback) and the segment says why
    assert FailedJobRegistry(queue=queue).count == 1
    plan.refresh_from_db()
    assert plan.refresh_failed_at is not None
    assert "unknown custom field 'plan'" in plan.refresh_error
    # when it can refresh again, a success clears the failure
    CustomField.objects.create(key="plan", label="Plan")
    assert segment_refresh_job(plan.pk) == (0, 0)
    plan.refresh_from_db()
    assert (plan.refresh_failed_at, plan.refresh_error) == (None, "")


def test_an_inactive_segment_is_not_listed_as_failing() -> None:
    Segment.objects.create(name="Old", definition={"tag": "x"}, is_active=False, refresh_failed_at=timezone.now(),
                           refresh_error="boom")
    live = Segment.objects.create(name="Live", definition={"tag": "x"}, refresh_failed_at=timezone.now(),
                                  refresh_error="boom")
    count, shown = ops.failed_segments()
    assert count == 1
    assert [s.pk for s in shown] == [live.pk]


# --- imports that failed ------------------------------------------------------------------------------------

def test_failed_imports_of_the_last_day_are_listed_with_their_reason_and_link(client: Client, role_users) -> None:  # noqa: ANN001
    failed = ImportJob.objects.create(file="imports/a.csv", original_name="leads-may.csv",
                                      status=ImportJob.Status.FAILED, message="row 1: no email column")
    old = ImportJob.objects.create(file="imports/b.csv", original_name="leads-2019.csv",
                                   status=ImportJob.Status.FAILED, message="ancient")
    ImportJob.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=2))
    ImportJob.objects.create(file="imports/c.csv", original_name="fine.csv", status=ImportJob.Status.COMPLETED)
    client.force_login(role_users["ops"])
    page = client.get("/admin/operations/").content.decode()
    table = html_section(page, 'id="failed-imports"', "</table>")
    assert f'href="/admin/contacts/importjob/{failed.pk}/change/"' in table
    assert "leads-may.csv" in table
    assert "row 1: no email column" in table
    assert "leads-2019.csv" not in table
    assert "fine.csv" not in table
    assert client.get(f"/admin/contacts/importjob/{failed.pk}/change/").status_code == 200  # ops may follow it
