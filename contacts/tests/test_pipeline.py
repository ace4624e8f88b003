"""The event pipeline: jobs leave after COMMIT, workers process each event once, the sweeper
re-queues what a lost job left behind. Scoring and segments are replaced by recording fakes here
(their own tests cover them; the lead's integration tests run them together)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types
from collections.abc import Callable, Collection, Sequence
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rq import SimpleWorker

from contacts import pipeline
from contacts.apikeys import api_key_create
from contacts.ingest import events_ingest
from contacts.models import ApiKey, Contact, Event
from core.queues import get_connection, get_queue


class Engines:
    """Stands in for scoring.services and contacts.segments.services; records every call."""

    def __init__(self) -> None:
        self.scored: list[list[int]] = []
        self.fit: list[set[int]] = []
        self.segmented: list[set[int]] = []
        self.score_changes: set[int] = set()
        self.segment_events: list[Event] = []
        # Like the real engine, segment events can be created when the engine is called.
        self.make_segment_events: Callable[[], list[Event]] | None = None

    def score_events(self, *, events: Sequence[Event]) -> set[int]:
        self.scored.append([e.pk for e in events])
        return set(self.score_changes)

    def score_fit(self, *, contact_ids: Collection[int]) -> set[int]:
        self.fit.append(set(contact_ids))
        return set(self.score_changes)

    def segments_update_contacts(self, *, contact_ids: Collection[int]) -> list[Event]:
        self.segmented.append(set(contact_ids))
        if self.make_segment_events is not None:
            self.segment_events, self.make_segment_events = self.make_segment_events(), None
        made, self.segment_events = self.segment_events, []
        return made


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> Engines:
    fake = Engines()
    scoring = types.ModuleType("scoring.services")
    scoring.score_events = fake.score_events  # type: ignore[attr-defined]
    scoring.score_fit = fake.score_fit  # type: ignore[attr-defined]
    segments = types.ModuleType("contacts.segments.services")
    segments.segments_update_contacts = fake.segments_update_contacts  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scoring.services", scoring)
    monkeypatch.setitem(sys.modules, "contacts.segments.services", segments)
    return fake


@pytest.fixture(autouse=True)
def empty_queues() -> None:
    get_connection().flushdb()


@pytest.fixture
def api_key(db: None) -> ApiKey:
    return api_key_create(name="website")[0]


def items(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"email": f"lead{n % 7}@example.com", "type": "page.viewed", "idempotency_key": f"k{n}"}
            for n in range(start, start + count)]


def drain() -> None:
    queue = get_queue("events")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def make_events(count: int, *, received_ago: dt.timedelta = dt.timedelta(0)) -> list[int]:
    contact = Contact.objects.get_or_create(email="old@example.com")[0]
    now = timezone.now()
    ids = [e.pk for e in Event.objects.bulk_create([
        Event(contact=contact, event_type="ping", occurred_at=now, source="test") for _ in range(count)])]
    Event.objects.filter(pk__in=ids).update(received_at=now - received_ago)
    return ids


@pytest.mark.django_db(transaction=True)
def test_the_events_job_leaves_after_commit_and_the_worker_marks_events_processed(
    api_key: ApiKey, engines: Engines,
) -> None:
    queue = get_queue("events")
    with transaction.atomic():
        result = events_ingest(api_key=api_key, items=items(10))
        assert queue.count == 0  # not before COMMIT: a worker would not see the rows yet
    assert queue.count == 1
    assert queue.jobs[0].func_name == "contacts.tasks_events.events_process_pending"
    assert queue.jobs[0].args == ()  # it takes on whatever is unprocessed when it runs

    drain()

    assert not Event.objects.filter(processed_at__isnull=True).exists()
    assert engines.scored == [sorted(result.event_ids)]
    assert engines.segmented == [set(Contact.objects.values_list("pk", flat=True))]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_ingest_enqueues_nothing(api_key: ApiKey) -> None:
    def failing_request() -> None:
        with transaction.atomic():
            events_ingest(api_key=api_key, items=items(3))
            raise RuntimeError("the request failed after ingesting")

    with pytest.raises(RuntimeError):
        failing_request()
    assert get_queue("events").count == 0
    assert not Event.objects.exists()


def scored_once(engines: Engines) -> list[int]:
    """Every event id the scoring engine was given, in order; a repeat would show twice."""
    return [pk for batch in engines.scored for pk in batch]


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_1000_is_one_job(api_key: ApiKey, engines: Engines) -> None:
    result = events_ingest(api_key=api_key, items=items(1000))
    assert result.accepted == 1000
    assert get_queue("events").count == 1
    drain()
    assert sorted(scored_once(engines)) == sorted(result.event_ids)


@pytest.mark.django_db(transaction=True)
def test_single_event_requests_coalesce_into_one_job_that_processes_each_event_once(
    api_key: ApiKey, engines: Engines,
) -> None:
    # given a signup form's stream: 20 API calls of one event each, while no worker runs yet
    ids = [events_ingest(api_key=api_key, items=items(1, start=n)).event_ids[0] for n in range(20)]
    # then one job waits for all of them, not one per call
    assert get_queue("events").count == 1
    # when it runs, every event is processed once, in one batch
    drain()
    assert engines.scored == [sorted(ids)]
    assert not Event.objects.filter(processed_at__isnull=True).exists()
    # and the next call after it ran gets a job of its own
    later = events_ingest(api_key=api_key, items=items(1, start=20)).event_ids
    assert get_queue("events").count == 1
    drain()
    assert sorted(scored_once(engines)) == sorted(ids + later)


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_while_the_job_runs_gets_a_new_job(api_key: ApiKey, engines: Engines) -> None:
    first = events_ingest(api_key=api_key, items=items(1)).event_ids
    arrived: list[int] = []

    def a_request_arrives() -> list[Event]:
        # a request stores an event after the job claimed its batch (the flag was cleared first)
        arrived.extend(events_ingest(api_key=api_key, items=items(1, start=1)).event_ids)
        return []

    engines.make_segment_events = a_request_arrives
    drain()  # runs the job, then the one the new event kicked
    assert arrived
    assert scored_once(engines) == first + arrived
    assert not Event.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_full_batch_hands_the_rest_to_a_fresh_job(engines: Engines, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "CLAIM_LIMIT", 2)
    ids = make_events(5)
    assert pipeline.events_kick()
    assert not pipeline.events_kick()  # one is waiting already
    drain()
    assert engines.scored == [ids[0:2], ids[2:4], ids[4:5]]  # one batch per job, oldest first


def age(ids: list[int], by: dt.timedelta = dt.timedelta(minutes=3)) -> None:
    Event.objects.filter(pk__in=ids).update(received_at=timezone.now() - by)


@pytest.mark.django_db(transaction=True)
def test_redis_flushed_with_the_job_and_flag_loses_no_event(api_key: ApiKey, engines: Engines) -> None:
    ids = [events_ingest(api_key=api_key, items=items(1, start=n)).event_ids[0] for n in range(3)]
    get_connection().flushdb()  # the job and the pending flag are gone; the events are in the database
    age(ids)
    assert pipeline.events_sweep() == 3
    drain()
    assert sorted(scored_once(engines)) == sorted(ids)
    assert not Event.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_flag_whose_job_was_lost_does_not_hold_back_the_next_event(
    api_key: ApiKey, engines: Engines,
) -> None:
    ids = events_ingest(api_key=api_key, items=items(1)).event_ids
    get_queue("events").empty()  # the job is lost (an operator emptied the queue), the flag stays
    ids += events_ingest(api_key=api_key, items=items(2, start=1)).event_ids
    # the flag names a job that no longer waits: the next event's kick enqueues one (it used to
    # wait for the flag's TTL or the sweeper, 2 minutes)
    assert get_queue("events").count == 1
    drain()
    assert sorted(scored_once(engines)) == sorted(ids)  # each once
    assert not Event.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_failed_events_job_is_retried_not_left_for_the_sweeper(
    api_key: ApiKey, engines: Engines, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rq.registry import ScheduledJobRegistry

    def down(**kwargs: Any) -> list[Event]:
        raise RuntimeError("database restarting")

    # given stored events whose job fails (the segment engine's database is restarting)
    ids = events_ingest(api_key=api_key, items=items(2)).event_ids
    monkeypatch.setattr(sys.modules["contacts.segments.services"], "segments_update_contacts", down)
    drain()
    # then they are still to do, and the job will run again soon (RQ's scheduler, in every
    # `manage.py worker`), without waiting for another event's kick or the sweeper
    assert Event.objects.filter(pk__in=ids, processed_at__isnull=True).count() == 2
    [job_id] = ScheduledJobRegistry(queue=get_queue("events")).get_job_ids()
    job = get_queue("events").fetch_job(job_id)
    assert job is not None
    assert job.retries_left == 2


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_only_duplicates_enqueues_nothing(api_key: ApiKey) -> None:
    events_ingest(api_key=api_key, items=items(3))
    get_connection().flushdb()
    again = events_ingest(api_key=api_key, items=items(3))
    assert (again.accepted, again.duplicates) == (0, 3)
    assert get_queue("events").count == 0


@pytest.mark.django_db
def test_processing_the_same_ids_twice_does_nothing_the_second_time(engines: Engines) -> None:
    ids = make_events(4)
    assert pipeline.events_process(event_ids=ids) == 4
    stamps = dict(Event.objects.values_list("pk", "processed_at"))
    assert pipeline.events_process(event_ids=ids) == 0
    assert len(engines.scored) == 1
    assert dict(Event.objects.values_list("pk", "processed_at")) == stamps


@pytest.mark.django_db
def test_contacts_whose_score_changed_are_resegmented_and_segment_events_scored(engines: Engines) -> None:
    ids = make_events(2)
    other = Contact.objects.create(email="other@example.com")
    made: list[Event] = []

    def enter() -> list[Event]:
        # segments_update_contacts creates its events processed (the pipeline scores them right away)
        made.append(Event.objects.create(contact=other, event_type="segment_entered", occurred_at=timezone.now(),
                                         source="system", processed_at=timezone.now()))
        return list(made)

    engines.score_changes = {other.pk}
    engines.make_segment_events = enter

    pipeline.events_process(event_ids=ids)
    entered = made[0]

    owner = Event.objects.get(pk=ids[0]).contact_id
    assert engines.segmented == [{owner, other.pk}]
    assert engines.scored == [sorted(ids), [entered.pk]]  # one level: no second segment pass


@pytest.mark.django_db
def test_a_failing_engine_leaves_the_events_unprocessed(engines: Engines, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = make_events(2)

    def broken(**kwargs: Any) -> list[Event]:
        raise RuntimeError("segment engine down")

    monkeypatch.setattr(sys.modules["contacts.segments.services"], "segments_update_contacts", broken)
    with pytest.raises(RuntimeError):
        pipeline.events_process(event_ids=ids)
    assert Event.objects.filter(pk__in=ids, processed_at__isnull=True).count() == 2


@pytest.mark.django_db
def test_a_concurrent_run_that_processed_some_events_rolls_this_one_back(
    engines: Engines, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = make_events(3)
    original = engines.score_events

    def racing(*, events: Sequence[Event]) -> set[int]:
        Event.objects.filter(pk=ids[0]).update(processed_at=timezone.now())  # another worker got there first
        return original(events=events)

    monkeypatch.setattr(sys.modules["scoring.services"], "score_events", racing)
    assert pipeline.events_process(event_ids=ids) == 0
    # Everything this run did is undone (here the "other worker" wrote inside the same transaction,
    # so its mark is undone too; in production it is committed and stays).
    assert Event.objects.filter(pk__in=ids, processed_at__isnull=True).count() == 3
    assert len(engines.scored) == 1


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_requeues_stale_unprocessed_events_once_until_they_run(engines: Engines) -> None:
    stale = make_events(3, received_ago=dt.timedelta(minutes=5))
    Event.objects.filter(pk=stale[0]).update(processed_at=timezone.now())
    recent = Event.objects.create(contact=Contact.objects.get(email="old@example.com"), event_type="ping",
                                  occurred_at=timezone.now(), source="test")
    queue = get_queue("events")

    assert pipeline.events_sweep() == 2
    assert [job.args for job in queue.jobs] == [(sorted(stale[1:]),)]
    assert pipeline.events_sweep() == 0  # the re-queued job has not run yet: not queued twice
    assert queue.count == 1

    drain()

    assert not Event.objects.filter(pk__in=stale, processed_at__isnull=True).exists()
    # a pending event rides along with the batch that runs (its own job then finds nothing to do)
    assert Event.objects.get(pk=recent.pk).processed_at is not None
    assert pipeline.events_sweep() == 0


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_job_is_importable_by_path(engines: Engines) -> None:
    make_events(2, received_ago=dt.timedelta(minutes=3))
    get_queue("default").enqueue("contacts.tasks_events.events_sweeper")
    default = get_queue("default")
    SimpleWorker([default], connection=default.connection).work(burst=True)
    drain()
    assert not Event.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_an_api_upsert_enqueues_contacts_changed_and_the_worker_runs_fit_and_segments(
    api_key: ApiKey, engines: Engines,
) -> None:
    raw = api_key_create(name="crm", scopes=["contacts:write"])[1]
    body = {"contacts": [{"email": "ann@acme.example", "company": "Acme"}, {"email": "bob@acme.example"}]}
    response = Client().post("/api/v1/contacts", json.dumps(body), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    jobs = get_queue("events").jobs
    assert [job.func_name for job in jobs] == ["contacts.tasks_events.contacts_changed"]

    drain()

    ids = set(Contact.objects.values_list("pk", flat=True))
    assert engines.fit == [ids]
    assert engines.segmented == [ids]


@pytest.mark.django_db
def test_a_job_takes_on_other_pending_events_so_a_backlog_becomes_one_batch(engines: Engines) -> None:
    first = make_events(2)
    backlog = make_events(3)
    assert pipeline.events_process(event_ids=first) == 5
    assert engines.scored == [sorted(first + backlog)]
    assert not Event.objects.filter(processed_at__isnull=True).exists()
    # the backlog's own job finds nothing left
    assert pipeline.events_process(event_ids=backlog) == 0
    assert len(engines.scored) == 1
