"""RQ jobs for segments: thin wrappers that take ids and call a service.

Each full refresh leaves its outcome on the segment for the operations page: a failure sets
`refresh_failed_at` and `refresh_error`, the next success clears them."""

from __future__ import annotations

import logging
from collections import defaultdict

from django.utils import timezone

from contacts.models import Segment
from contacts.segments.services import segment_refresh, segments_refresh_all

logger = logging.getLogger(__name__)

ERROR_MAX = 2000  # characters of the error kept on the segment


def segment_refresh_job(segment_id: int) -> tuple[int, int] | None:
    """Full refresh of one segment (queued on save and by the admin's "Refresh now").
    A deleted or deactivated segment is a no-op; an invalid definition fails the job with the
    reason (recorded on the segment too)."""
    segment = Segment.objects.filter(pk=segment_id, is_active=True).first()
    if segment is None:
        return None
    try:
        outcome = segment_refresh(segment=segment)
    except Exception as exc:
        _failures_record({_error_text(exc): [segment.pk]})
        raise  # RQ records the job as failed, with the traceback
    _successes_record([segment.pk])
    return outcome


def segments_refresh_all_job() -> dict[int, tuple[int, int] | str]:
    """Periodic safety net: refresh every active segment (time windows move without events).
    The service reports a segment it could not refresh by its error text instead of counts."""
    outcome = segments_refresh_all()
    failed: dict[str, list[int]] = defaultdict(list)
    for segment_id, result in outcome.items():
        if isinstance(result, str):
            failed[result[:ERROR_MAX]].append(segment_id)
    _failures_record(failed)
    _successes_record([pk for pk, result in outcome.items() if not isinstance(result, str)])
    return outcome


def _error_text(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return text[:ERROR_MAX]


def _failures_record(failed: dict[str, list[int]]) -> None:
    """Mark these segments' refresh as failed now, with their error (one UPDATE per distinct error).
    Never raises: the refresh's own failure is what the caller reports."""
    now = timezone.now()
    for error, ids in failed.items():
        try:
            Segment.objects.filter(pk__in=ids).update(refresh_failed_at=now, refresh_error=error)
        except Exception:
            logger.exception("segment refresh failure not recorded for segments %s", ids)


def _successes_record(ids: list[int]) -> None:
    """Clear a recorded failure on these segments (one UPDATE, touching only those that had one)."""
    if ids:
        Segment.objects.filter(pk__in=ids, refresh_failed_at__isnull=False).update(
            refresh_failed_at=None, refresh_error="")
