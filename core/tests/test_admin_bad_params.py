"""Garbage in the admin, lead and operations pages' query strings and paths (issue 14): a 400, a 404,
the admin's own "?e=1" redirect or a form error, never a 500. Walked as a superuser, who reaches
every view."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client

from automation.models import Workflow
from core.queues import get_connection

pytestmark = pytest.mark.django_db
HUGE = "99999999999999999999"  # past a 64-bit integer
RQ_QUEUE = "99"  # there are a handful of queues


@pytest.fixture
def superuser(role_users: dict[str, User]) -> Client:
    get_connection().flushdb()
    client = Client(raise_request_exception=False)  # a 500 is an answer to check, not a test error
    client.force_login(role_users["admin"])
    return client


@pytest.fixture
def workflow() -> Workflow:
    return Workflow.objects.create(key="welcome", name="Welcome")


GARBAGE = ["abc", "-1", "0", HUGE, "1.5", "%00", "1e9", "[]"]

LEAD_URLS = [
    *(f"/leads/?page={g}" for g in GARBAGE),
    *(f"/leads/?{name}={g}" for name in ("grade", "owner", "segment", "lifecycle_stage", "mql_this_week", "q")
      for g in GARBAGE),
    *(f"/leads/export.csv?{name}={g}" for name in ("grade", "owner", "segment", "lifecycle_stage", "page")
      for g in GARBAGE),
    f"/leads/{HUGE}/",
    "/leads/0/",
]
OPERATIONS_URLS = ["/admin/operations/?page=abc&since=notadate&queue=99"]
RQ_URLS = [
    *(f"/admin/rq/queues/{RQ_QUEUE}/{tail}" for tail in (
        "", "details/", "finished/", "failed/", "scheduled/", "started/", "deferred/", "empty/", "requeue-all/",
        "some-job-id/", "some-job-id/delete/", "some-job-id/requeue/", "some-job-id/enqueue/", "some-job-id/stop/")),
    f"/admin/rq/queues/{HUGE}/",
    f"/admin/rq/queues/confirm-action/{RQ_QUEUE}/",
    f"/admin/rq/queues/actions/{RQ_QUEUE}/",
    f"/admin/rq/workers/{RQ_QUEUE}/",
    f"/admin/rq/workers/{RQ_QUEUE}/some-worker/",
    "/admin/rq/queues/0/no-such-job/",
    "/admin/rq/workers/0/no-such-worker/",
    "/admin/rq/workers/0/rq:worker:gone/",
    f"/admin/rq/schedulers/{RQ_QUEUE}/",
    f"/admin/django_rq/dashboard/queues/{RQ_QUEUE}/",
    f"/admin/django_rq/dashboard/workers/{RQ_QUEUE}/",
    "/admin/django_rq/dashboard/workers/0/rq:worker:gone/",
    "/admin/rq/queues/0/?page=abc",
    f"/admin/rq/queues/0/finished/?page={HUGE}",
    "/admin/rq/queues/0/failed/?page=-1",
]
WORKFLOW_URLS = [
    *(f"/admin/automation/workflow/{{wf}}/export/?version={g}" for g in [*GARBAGE, ""]),
    "/admin/automation/workflow/{wf}/export/",
    f"/admin/automation/workflow/{HUGE}/export/?version=1",
    f"/admin/automation/workflow/{HUGE}/versions/",
    "/admin/automation/workflow/{wf}/versions/?simulate=abc",
    *(f"/admin/contacts/contact/{g}/export-data/" for g in GARBAGE),
]


@pytest.mark.parametrize("url", [*LEAD_URLS, *OPERATIONS_URLS, *RQ_URLS, *WORKFLOW_URLS])
def test_garbage_in_a_url_is_never_a_500(superuser: Client, workflow: Workflow, url: str) -> None:
    response = superuser.get(url.format(wf=workflow.pk))
    assert response.status_code < 500, response.content[:2000]


@pytest.mark.parametrize("url", [f"/admin/rq/queues/{RQ_QUEUE}/", f"/admin/rq/queues/{RQ_QUEUE}/failed/",
                                 f"/admin/rq/workers/{RQ_QUEUE}/", f"/admin/rq/queues/actions/{RQ_QUEUE}/"])
def test_an_out_of_range_queue_number_is_a_404(superuser: Client, url: str) -> None:
    assert superuser.get(url).status_code == 404


@pytest.mark.parametrize("version", ["abc", "", HUGE, "-1"])
def test_a_bad_version_in_a_workflow_export_is_a_404(superuser: Client, workflow: Workflow, version: str) -> None:
    assert superuser.get(f"/admin/automation/workflow/{workflow.pk}/export/?version={version}").status_code == 404


@pytest.mark.parametrize("data", [
    {"action": "stage", "version": "abc"}, {"action": "stage"}, {"action": "stage", "version": HUGE},
    {"action": "stage", "version": "1.5"}, {"action": "bogus"}, {"action": ["stage", "promote"]},
])
def test_a_bad_stage_request_is_a_message_or_404_never_a_500(superuser: Client, workflow: Workflow,
                                                              data: dict[str, str]) -> None:
    response = superuser.post(f"/admin/automation/workflow/{workflow.pk}/act/", data)
    assert response.status_code in (302, 404), response.content[:2000]


def _changelists() -> list[str]:
    return sorted(f"{m._meta.app_label}/{m._meta.model_name}" for m in admin.site._registry)


CHANGELIST_GARBAGE = ["p=abc", f"p={HUGE}", "p=-1", "o=abc", "o=99", "o=-1.x", "q=%00", f"id={HUGE}", "id=abc",
                      f"id__gte={HUGE}", "id__in=a,b", "created_at__gte=notadate", "created_at__year=abc",
                      "created_at__day=99", "all=", "_to_field=password", "nosuchfield=1", "e=1"]


@pytest.mark.parametrize("changelist", _changelists())
def test_garbage_in_every_changelist_query_is_never_a_500(superuser: Client, changelist: str) -> None:
    for query in CHANGELIST_GARBAGE:
        response = superuser.get(f"/admin/{changelist}/?{query}")
        assert response.status_code < 500, (query, response.content[:2000])
    for object_id in ("abc", HUGE, "-1", "%00"):
        response = superuser.get(f"/admin/{changelist}/{object_id}/change/")
        assert response.status_code < 500, (object_id, response.content[:2000])
