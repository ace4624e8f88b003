"""RQ jobs of the event pipeline (queue `events`): thin wrappers that take ids and call a service."""

from __future__ import annotations

from contacts import pipeline


def events_process_pending() -> int:
    """Enqueued by pipeline.events_kick after COMMIT of new events, unless one is already waiting:
    takes on every unprocessed event (up to pipeline.CLAIM_LIMIT, then a fresh job)."""
    return pipeline.events_process_pending()


def events_process(event_ids: list[int]) -> int:
    """Enqueued by the sweeper (one job per chunk of at most 500 stale event ids); the API enqueued
    it before jobs were coalesced, so jobs already in a queue still run."""
    return pipeline.events_process(event_ids=event_ids)


def contacts_changed(contact_ids: list[int]) -> int:
    """Enqueued by the contact API after an upsert."""
    return len(pipeline.contacts_changed(contact_ids=contact_ids))


def events_sweeper() -> int:
    """Scheduled every minute (config/schedules.py): re-queues events whose job was lost."""
    return pipeline.events_sweep()
