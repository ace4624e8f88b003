"""Import jobs through the real queue: claimed once, counted once, re-queued after a dead worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from rq import SimpleWorker

from bench.csvgen import write_contacts_csv
from contacts.imports.jobs import import_job_run, import_job_start, import_sweep
from contacts.models import Contact, ImportJob
from core.queues import get_connection, get_queue

ROOT = Path(__file__).resolve().parents[2]
Status = ImportJob.Status


@pytest.fixture(autouse=True)
def empty_queues() -> None:
    get_connection().flushdb()


def make_job(content: bytes, name: str = "contacts.csv", **fields: object) -> ImportJob:
    job = ImportJob(original_name=name, file_size=len(content), **fields)
    job.file.save(name, ContentFile(content), save=False)
    job.save()
    return job


def drain() -> None:
    queue = get_queue("imports")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


@pytest.mark.django_db(transaction=True)
def test_a_queued_import_runs_on_a_worker_and_records_counts_and_report() -> None:
    job = make_job(b"Email,Company\nann@x.example,Acme\nnot-an-email,Globex\nann@x.example,Acme 2\n")
    import_job_start(job=job)
    assert job.status == Status.QUEUED
    assert get_queue("imports").count == 1
    drain()
    job.refresh_from_db()
    assert job.status == Status.COMPLETED, job.message
    assert (job.rows_read, job.created, job.rejected, job.duplicates, job.progress) == (3, 1, 1, 1, 100)
    assert job.attempts == 1
    assert job.finished_at is not None
    report = job.error_report.read().decode()
    assert "3,Email,not-an-email,not a valid email address: an email address must have an @-sign" in report
    assert "duplicate in file: line 4" in report
    assert [entry["message"].split(":")[0] for entry in job.log] == ["started", "attempt 1 started", "completed"]
    assert Contact.objects.get().company == "Acme 2"


@pytest.mark.django_db(transaction=True)
def test_an_unreadable_file_fails_the_job_with_its_reason() -> None:
    job = make_job(b"PK\x03\x04 not really a csv", name="contacts.xlsx")
    import_job_start(job=job)
    drain()
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "Excel workbook" in job.message
    assert not Contact.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_running_a_job_twice_imports_it_once() -> None:
    job = make_job(b"email\na@x.example\n")
    import_job_start(job=job)
    import_job_run(job_id=job.pk)
    import_job_run(job_id=job.pk)  # a duplicate delivery of the RQ job: nothing to claim
    job.refresh_from_db()
    assert (job.status, job.attempts, job.created) == (Status.COMPLETED, 1, 1)


@pytest.mark.django_db(transaction=True)
def test_only_pending_jobs_can_be_started() -> None:
    job = make_job(b"email\na@x.example\n", status=Status.COMPLETED)
    with pytest.raises(ValueError, match="already been started"):
        import_job_start(job=job)


@pytest.mark.django_db(transaction=True)
@override_settings(IMPORT_STALE_SECONDS=60)
def test_the_sweeper_requeues_a_silent_job_and_fails_it_after_three_tries() -> None:
    job = make_job(b"email\na@x.example\n", status=Status.RUNNING, attempts=1,
                   heartbeat_at=timezone.now() - timedelta(minutes=5))
    fresh = make_job(b"email\nb@x.example\n", status=Status.RUNNING, attempts=1, heartbeat_at=timezone.now())
    assert import_sweep() == 1
    job.refresh_from_db()
    fresh.refresh_from_db()
    assert job.status == Status.QUEUED
    assert fresh.status == Status.RUNNING
    assert "re-queued" in job.log[-1]["message"]
    drain()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.created) == (Status.COMPLETED, 2, 1)

    tired = make_job(b"email\nc@x.example\n", status=Status.RUNNING, attempts=3,
                     heartbeat_at=timezone.now() - timedelta(minutes=5))
    import_sweep()
    tired.refresh_from_db()
    assert tired.status == Status.FAILED
    assert "stopped 3 times" in tired.message


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    return f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@override_settings(IMPORT_STALE_SECONDS=60)
def test_a_worker_killed_mid_import_leaves_nothing_half_done_and_the_retry_counts_exactly(tmp_path: Path) -> None:
    # given a big import running on a real worker process
    rows = 150_000
    csv_path = write_contacts_csv(tmp_path / "big.csv", rows)
    Contact.objects.create(email="someone@else.example")
    job = make_job(csv_path.read_bytes(), name="big.csv")
    import_job_start(job=job)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url(),
           "DEBUG": "true", "ENV_FILE": ""}
    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "worker", "imports"], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.status == Status.RUNNING and job.progress > 0:
                break
            assert worker.poll() is None, "worker died on its own"
            time.sleep(0.05)
        assert job.status == Status.RUNNING, f"too late to kill: {job.status}"
        assert job.progress < 100
        # when the worker (and its work horse) is killed mid-import
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    # then nothing of the file is in the database, and the job says it is still running
    job.refresh_from_db()
    assert Contact.objects.count() == 1
    assert job.status == Status.RUNNING
    assert job.created == 0
    # when the sweeper sees it silent and a worker picks it up again
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert import_sweep() == 1
    drain()
    # then every row is imported exactly once and counted once
    job.refresh_from_db()
    assert job.status == Status.COMPLETED, job.message
    assert (job.attempts, job.created, job.updated, job.rejected, job.duplicates) == (2, rows, 0, 0, 0)
    assert Contact.objects.count() == rows + 1


@pytest.mark.django_db(transaction=True)
def test_a_completed_import_queues_fit_scoring_and_segment_refresh() -> None:
    from contacts.models import Segment, SegmentMembership
    from scoring.models import ScoringRule

    ScoringRule.objects.create(name="Germany", kind="fit", points=7,
                               conditions={"field": "country", "op": "eq", "value": "DE"})
    segment = Segment.objects.create(name="Germans", definition={"field": "country", "op": "eq", "value": "DE"})
    job = make_job(b"email,country\nhans@x.example,DE\nann@x.example,GB\n")
    import_job_start(job=job)
    drain()
    default = get_queue("default")
    SimpleWorker([default], connection=default.connection).work(burst=True)
    assert Contact.objects.get(email="hans@x.example").score == 7
    assert Contact.objects.get(email="ann@x.example").score == 0
    assert list(SegmentMembership.objects.filter(segment=segment).values_list("contact__email", flat=True)) == [
        "hans@x.example"]
    job.refresh_from_db()
    assert job.log[-1]["message"] == "fit scores and segments updated"


@pytest.mark.django_db(transaction=True)
def test_a_job_read_by_parallel_workers_reports_progress_between_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: progress updates share the connection with the staging COPY; each one ends it."""
    from contacts.imports import engine, parallel

    if parallel.workers() < 2:
        pytest.skip("the parallel reader needs two cores")
    monkeypatch.setattr(parallel, "MIN_FILE_BYTES", 0)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 64)
    monkeypatch.setattr(engine, "PROGRESS_SECONDS", 0)  # a progress update after every chunk
    lines = [f"person{i}@x.example,Company {i}" for i in range(40)]
    job = make_job(("Email,Company\n" + "\n".join(lines) + "\nbroken,X\n").encode())
    import_job_start(job=job)
    drain()
    job.refresh_from_db()
    assert job.status == Status.COMPLETED, job.message
    assert (job.rows_read, job.created, job.rejected) == (41, 40, 1)
    assert Contact.objects.count() == 40
