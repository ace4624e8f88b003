"""Jobs finished and failed per queue and minute: counted in Redis by the workers `manage.py worker`
runs (in-process by default, forking with --worker-class rq.Worker), charted on the operations page
and exported at /metrics. Counting never breaks a job."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.worker import SimpleWorker, Worker

from core import ops
from core.management.commands.worker import InProcessWorker, JobCounters, counting_worker_class
from core.queues import get_connection
from core.testing.html import html_section
from core.views_ops import _chart

UTC = dt.UTC


# Jobs the workers run (importable by path, so a forked work horse finds them too).
def job_ok(n: int) -> int:
    return n * 2


def job_raises() -> None:
    raise RuntimeError("boom")


def job_kills_its_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(autouse=True)
def empty_redis() -> Iterator[None]:
    get_connection().flushdb()
    yield
    get_connection().flushdb()


def queue(name: str) -> Queue:
    return Queue(name, connection=get_connection())  # plain RQ: no wait for a COMMIT


def totals() -> dict[str, tuple[int, int]]:
    return {t.name: (t.finished, t.failed) for t in ops.queue_throughput()}


# --- the workers count ----------------------------------------------------------------------------------------

def test_the_default_in_process_worker_counts_finished_and_failed_jobs_per_queue() -> None:
    # given 3 jobs that succeed and 2 that raise on the crm queue, and one that succeeds on default
    crm, default = queue("crm"), queue("default")
    for n in range(3):
        crm.enqueue(job_ok, n)
    crm.enqueue(job_raises)
    crm.enqueue(job_raises)
    default.enqueue(job_ok, 7)
    # when `manage.py worker` drains them with its default worker class
    call_command("worker", "crm", "default", "--burst", verbosity=0)
    # then each queue's counters hold its outcomes, and the other queues' are empty
    assert totals() == {"default": (1, 0), "events": (0, 0), "delivery": (0, 0), "crm": (3, 2), "imports": (0, 0)}
    assert FailedJobRegistry(queue=crm).count == 2


def test_the_forking_worker_counts_too_including_a_work_horse_killed_mid_job() -> None:
    # given jobs that succeed, raise (handled in the work horse) and kill their work horse (handled by the parent)
    crm = queue("crm")
    crm.enqueue(job_ok, 1)
    crm.enqueue(job_ok, 2)
    crm.enqueue(job_raises)
    killed = crm.enqueue(job_kills_its_process)
    # when `manage.py worker --worker-class rq.Worker` (a fork per job) drains the queue
    call_command("worker", "crm", "--burst", "--worker-class", "rq.Worker", verbosity=0)
    # then both failures count, whichever process handled them
    assert totals()["crm"] == (2, 2)
    assert killed.get_status() == JobStatus.FAILED


def test_every_worker_class_the_command_runs_counts() -> None:
    assert counting_worker_class("core.management.commands.worker.InProcessWorker") is InProcessWorker
    forking = counting_worker_class("rq.Worker")
    assert issubclass(forking, JobCounters)
    assert issubclass(forking, Worker)
    assert issubclass(counting_worker_class(SimpleWorker), JobCounters)
    assert not issubclass(SimpleWorker, JobCounters)  # RQ's own class is left alone


def test_a_counter_redis_refuses_is_logged_and_the_job_still_finishes(caplog: pytest.LogCaptureFixture) -> None:
    # given the counters of this minute and the next hold a value HINCRBY refuses (WRONGTYPE)
    redis = get_connection()
    minute = int(time.time() // 60)
    for m in (minute, minute + 1):
        redis.set(ops.JOB_COUNTERS_KEY.format(queue="default", minute=m), "not a hash")
    job = queue("default").enqueue(job_ok, 21)
    # when the worker runs the job
    with caplog.at_level(logging.WARNING, logger="core.ops"):
        InProcessWorker([queue("default")], connection=redis).work(burst=True)
    # then the job finished with its result, and the lost count was logged
    job = Job.fetch(job.id, connection=redis)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == 42
    assert "job finished counter not recorded for queue default" in caplog.text


def test_recording_without_redis_logs_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = Redis(unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=0.1)
    with caplog.at_level(logging.WARNING, logger="core.ops"):
        ops.job_outcome_record(redis=nowhere, queue="delivery", outcome="failed")
    assert "job failed counter not recorded for queue delivery" in caplog.text
    with pytest.raises(ValueError, match="unknown job outcome"):
        ops.job_outcome_record(redis=nowhere, queue="delivery", outcome="done")


# --- reading them back --------------------------------------------------------------------------------------

def test_throughput_is_the_last_60_minutes_by_minute_and_counters_expire() -> None:
    now = dt.datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
    redis = get_connection()
    for seconds_ago, outcome in [(0, "finished"), (0, "finished"), (300, "failed"), (59 * 60, "finished"),
                                 (61 * 60, "failed")]:  # the last one is over an hour old
        ops.job_outcome_record(redis=redis, queue="events", outcome=outcome, at=now.timestamp() - seconds_ago)
    events = next(t for t in ops.queue_throughput(now) if t.name == "events")
    assert len(events.per_minute) == 60
    assert events.per_minute[0][0] == dt.datetime(2030, 1, 1, 11, 1, tzinfo=UTC)
    assert events.per_minute[-1] == (dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC), 2, 0)
    assert events.per_minute[-6] == (dt.datetime(2030, 1, 1, 11, 55, tzinfo=UTC), 0, 1)
    assert (events.finished, events.failed) == (3, 1)
    assert events.failure_rate == 0.25
    key = ops.JOB_COUNTERS_KEY.format(queue="events", minute=int(now.timestamp() // 60))
    assert 0 < redis.ttl(key) <= ops.JOB_COUNTERS_TTL


def test_the_chart_places_each_minute_in_the_hour_ending_now() -> None:
    end = dt.datetime(2030, 1, 1, 12, 0, 40, tzinfo=UTC)
    rows = [(dt.datetime(2030, 1, 1, 11, 0, tzinfo=UTC), 9, 9),  # 60 minutes before: outside
            (dt.datetime(2030, 1, 1, 11, 1, tzinfo=UTC), 2, 0),
            (dt.datetime(2030, 1, 1, 11, 30, tzinfo=UTC), 0, 0),  # empty: no bar
            (dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC), 3, 1)]
    chart = _chart(rows, end=end, ok="finished", height=30)
    assert [b["x"] for b in chart["bars"]] == [0.0, 590.0]
    assert chart["peak"] == 4
    last = chart["bars"][-1]
    assert (last["sent_h"], last["failed_h"], last["failed_y"]) == (22.5, 7.5, 0.0)
    assert last["label"].endswith("3 finished, 1 failed")


@pytest.mark.django_db
def test_the_operations_page_charts_each_queue(client: Client, role_users) -> None:  # noqa: ANN001
    redis = get_connection()
    for outcome in ("finished", "finished", "finished", "failed"):
        ops.job_outcome_record(redis=redis, queue="delivery", outcome=outcome)
    client.force_login(role_users["ops"])
    page = client.get("/admin/operations/").content.decode()
    row = html_section(page, '<tr id="throughput-delivery">', "</tr>")
    assert "<td>3</td>" in row
    assert ">1</strong>" in row
    assert "<td>0.250</td>" in row
    assert "3 finished, 1 failed</title>" in row
    assert "<rect" not in html_section(page, '<tr id="throughput-imports">', "</tr>")


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="s3cret-token")
def test_metrics_export_the_last_hour_per_queue(client: Client) -> None:
    redis = get_connection()
    for outcome in ("finished", "finished", "failed"):
        ops.job_outcome_record(redis=redis, queue="crm", outcome=outcome)
    body = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).content.decode()
    assert 'leadflow_queue_jobs_finished_last_hour{queue="crm"} 2.0' in body
    assert 'leadflow_queue_jobs_failed_last_hour{queue="crm"} 1.0' in body
    assert 'leadflow_queue_jobs_finished_last_hour{queue="events"} 0.0' in body
