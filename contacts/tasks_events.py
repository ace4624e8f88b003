"""RQ jobs of the event pipeline (queue `events`): thin wrappers that take ids and call a service."""

from __future__ import annotations

from contacts import pipeline


def events_process(event_ids: list[int]) -> int:
    """Enqueued by contacts.ingest after COMMIT, one job per chunk of at most 500 new event ids."""
    return pipeline.events_process(event_ids=event_ids)


def contacts_changed(contact_ids: list[int]) -> int:
    """Enqueued by the contact API after an upsert."""
    return len(pipeline.contacts_changed(contact_ids=contact_ids))


def events_sweeper() -> int:
    """Scheduled every minute (config/schedules.py): re-queues events whose job was lost."""
    return pipeline.events_sweep()
