"""RQ jobs of the contacts app: thin wrappers that take ids and call a service."""

from __future__ import annotations

from contacts.imports.jobs import import_followup as import_followup_service
from contacts.imports.jobs import import_job_run, import_sweep


def import_run(job_id: int) -> None:
    import_job_run(job_id=job_id)


def import_sweeper() -> int:
    return import_sweep()


def import_followup(job_id: int) -> None:
    import_followup_service(job_id=job_id)
