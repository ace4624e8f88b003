"""RQ jobs for segments: thin wrappers that take ids and call a service.

The service leaves each full refresh's outcome on the segment for the operations page (a failure
sets `refresh_failed_at` and `refresh_error`, the next success clears them), whoever calls it."""

from __future__ import annotations

from contacts.models import Segment
from contacts.segments.services import segment_refresh, segments_refresh_all


def segment_refresh_job(segment_id: int) -> tuple[int, int] | None:
    """Full refresh of one segment (queued on save and by the admin's "Refresh now").
    A deleted or deactivated segment is a no-op; a failure (an invalid definition, a database
    error) is recorded on the segment and fails the job, so RQ keeps it with its traceback."""
    segment = Segment.objects.filter(pk=segment_id, is_active=True).first()
    if segment is None:
        return None
    return segment_refresh(segment=segment)


def segments_refresh_all_job() -> dict[int, tuple[int, int] | str]:
    """Periodic safety net: refresh every active segment (time windows move without events).
    A segment that could not be refreshed is reported by its error text instead of counts."""
    return segments_refresh_all()
