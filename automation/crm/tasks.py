"""RQ jobs of CRM sync (queue `crm`): thin wrappers that take ids and call a service."""

from __future__ import annotations

from automation.crm import services


def crm_sync_run(connection_id: int) -> int:
    """Enqueued after COMMIT whenever rows are queued (coalesced per connection), by itself for
    retries that come due later, and by the sweeper."""
    return services.crm_sync_run(connection_id=connection_id)


def crm_sweeper() -> int:
    """Scheduled every minute (config/schedules.py): re-queues rows whose worker died mid-send and
    wakes every connection with due rows (Redis may have lost its job)."""
    return services.crm_sweep()


def crm_import_sync(job_id: int) -> int:
    """Enqueued after an import's follow-up: queues syncs for the contacts it wrote."""
    return services.crm_import_sync(job_id=job_id)
