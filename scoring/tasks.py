"""RQ jobs of the scoring app: thin wrappers that take ids and call a service."""

from __future__ import annotations

from scoring.services import recompute_job_run as _recompute_job_run
from scoring.services import scores_decay as _scores_decay


def recompute_job_run(job_id: int) -> None:
    """Queued by recompute_job_create (after a rule or grade band edit), on "default"."""
    _recompute_job_run(job_id=job_id)


def scores_decay() -> int:
    """Daily (config/schedules.py): cached scores follow their decaying entries."""
    return _scores_decay()
