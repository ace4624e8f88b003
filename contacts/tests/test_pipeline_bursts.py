"""A burst does not hold back the signups stored while it waits (issue 25): the coalesced events
job processes small causes (a request's few events) in a transaction of their own, before the
burst, and the burst in chunks of BURST_CHUNK, one per job, so the worker's other queues
(delivery) run between them. Scoring and segments are the recording fakes of test_pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from contacts import pipeline
from contacts.ingest import events_ingest
from contacts.models import ApiKey, Event
from contacts.tests.test_pipeline import Engines, api_key, drain, empty_queues, engines  # noqa: F401  fixtures


def registrations(prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"email": f"{prefix}{n}@example.com", "type": "webinar_registered", "idempotency_key": f"{prefix}{n}"}
            for n in range(count)]


@pytest.mark.django_db(transaction=True)
def test_signups_stored_behind_a_burst_go_first_and_the_burst_in_chunks_one_per_job(
    api_key: ApiKey, engines: Engines, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setattr(pipeline, "BURST_CHUNK", 25)
    # given a webinar platform's call of 60 registrations, then two signups of one request each,
    # stored before any worker ran
    burst = events_ingest(api_key=api_key, items=registrations("b", 60), correlation_id="call-1").event_ids
    signups = [events_ingest(api_key=api_key, items=registrations(f"s{n}-", 1), correlation_id=f"req-{n}").event_ids[0]
               for n in range(2)]
    # when the worker runs the events queue
    drain()
    # then the signups were processed first, in a batch of their own, then 25 of the burst, and the
    # rest of the burst by the next job (35 left: few enough to count as small), each once; not 62
    # events in one transaction that the signups wait for
    assert engines.scored == [signups, burst[:25], burst[25:]]
    assert not Event.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_signup_of_a_contact_in_the_burst_waits_for_the_burst_so_its_events_stay_in_order(
    api_key: ApiKey, engines: Engines, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setattr(pipeline, "BURST_CHUNK", 40)
    # given a burst of 60, then a signup of b45 (in the burst's second chunk) and one of a new contact
    burst = events_ingest(api_key=api_key, items=registrations("b", 60), correlation_id="call-1").event_ids
    again = events_ingest(api_key=api_key, items=[{"email": "b45@example.com", "type": "page.viewed"}],
                          correlation_id="req-1").event_ids
    new = events_ingest(api_key=api_key, items=registrations("s", 1), correlation_id="req-2").event_ids
    drain()
    # then b45's own event is processed after its burst event, with the burst's second chunk
    assert engines.scored == [new, burst[:40], burst[40:] + again]
