"""`manage.py worker` on several queues gives each its turn: a delivery job runs while a stream of
event jobs keeps arriving, instead of waiting for the stream to stop (issue 25). Real Redis, the
command's own worker; what is checked is the order the jobs ran in, never their timing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command
from rq import Queue

from core.management.commands.worker import FairQueues, counting_worker_class
from core.queues import get_connection

RUNS = "test:fairness:runs"
STREAM = 30  # event jobs in the stream; each one, while it runs, enqueues the next


def queue(name: str) -> Queue:
    return Queue(name, connection=get_connection())  # plain RQ: no wait for a COMMIT


# Jobs the worker runs (importable by path).
def event_job(n: int) -> None:
    get_connection().rpush(RUNS, f"events:{n}")
    if n < STREAM:  # a sustained stream: there is always another event job waiting
        queue("events").enqueue(event_job, n + 1)


def named_job(name: str) -> None:
    get_connection().rpush(RUNS, name)


@pytest.fixture(autouse=True)
def empty_redis() -> Iterator[None]:
    get_connection().flushdb()
    yield
    get_connection().flushdb()


def runs() -> list[str]:
    return [r.decode() if isinstance(r, bytes) else r for r in get_connection().lrange(RUNS, 0, -1)]


@pytest.mark.django_db(transaction=True)
def test_a_delivery_job_runs_while_a_stream_of_event_jobs_keeps_arriving() -> None:
    # given a stream of event jobs (each enqueues the next) and one delivery job waiting behind it
    queue("events").enqueue(event_job, 0)
    queue("delivery").enqueue(named_job, "delivery")
    # when the project's worker serves events and delivery
    call_command("worker", "events", "delivery", "--burst", verbosity=0)
    # then the delivery job ran after at most one event job, not after the whole stream
    order = runs()
    assert order.index("delivery") <= 1, order
    assert [r for r in order if r != "delivery"] == [f"events:{n}" for n in range(STREAM + 1)]


@pytest.mark.django_db(transaction=True)
def test_every_queue_gets_a_turn_while_the_first_never_runs_dry() -> None:
    # given a stream on events and one job on each of the worker's other queues
    queue("events").enqueue(event_job, 0)
    for name in ("delivery", "default", "crm"):
        queue(name).enqueue(named_job, name)
    # when one worker serves all four
    call_command("worker", "events", "delivery", "default", "crm", "--burst", verbosity=0)
    # then each other queue's job ran within the first round: one event job, then the others in turn
    assert runs()[:4] == ["events:0", "delivery", "default", "crm"]


def test_every_worker_class_the_command_runs_takes_turns() -> None:
    assert issubclass(counting_worker_class("rq.Worker"), FairQueues)
    assert issubclass(counting_worker_class("core.management.commands.worker.InProcessWorker"), FairQueues)
