"""RQ jobs of broadcasts: thin wrappers that take ids and call a service (broadcasts/services.py)."""

from __future__ import annotations

from broadcasts import services


def broadcast_queue_job(broadcast_id: int) -> int:
    """Enqueued after COMMIT by broadcast_queue_kick: writes the outbox messages of a sending
    broadcast's recipients, chunk after chunk, and re-enqueues itself while some are left."""
    return services.broadcast_queue(broadcast_id=broadcast_id)


def broadcasts_tick_job() -> dict[str, int]:
    """Scheduled (config/schedules.py): starts due broadcasts, decides due A/B tests, resumes
    half-queued broadcasts."""
    return services.broadcasts_tick()
