"""RQ jobs of workflows (queue `default`): thin wrappers that take ids and call a service."""

from __future__ import annotations

from automation import engine


def enrollments_advance(enrollment_ids: list[int]) -> int:
    """Enqueued after COMMIT by triggers and by the wake tick; re-enqueues what it has not reached."""
    return engine.enrollments_advance(enrollment_ids=enrollment_ids)


def enrollments_wake() -> int:
    """Scheduled every 5 s (config/schedules.py): due waits, retries and lost jobs get advance jobs."""
    return engine.enrollments_wake() + engine.webhooks_wake()


def webhook_deliver(delivery_id: int) -> str:
    """One webhook or sales-notification email of a step; retried by the wake tick when due."""
    return engine.webhook_deliver(delivery_id=delivery_id)
