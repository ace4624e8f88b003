"""What the marketer's home page shows (selectors): recent imports, segments with their counts,
workflows with the state of their versions, and today's sends and failures."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Prefetch, Q
from django.utils import timezone


@dataclass(frozen=True)
class WorkflowRow:
    workflow: Any
    production: Any | None
    staging: Any | None
    drafts: int


@dataclass(frozen=True)
class Today:
    sent: int
    failed: int
    queued: int


def recent_imports(limit: int = 5) -> list[Any]:
    from contacts.models import ImportJob

    return list(ImportJob.objects.select_related("created_by").order_by("-created_at")[:limit])


def segments_with_counts(limit: int = 10) -> list[Any]:
    from contacts.models import Segment

    # member_count is kept by each refresh; the largest segments first.
    return list(Segment.objects.filter(is_active=True).order_by("-member_count", "name")[:limit])


def workflows_with_state(limit: int = 10) -> list[WorkflowRow]:
    from automation.models import VersionState, Workflow, WorkflowVersion

    live = WorkflowVersion.objects.filter(state__in=[VersionState.PRODUCTION, VersionState.STAGING, VersionState.DRAFT])
    rows = []
    for workflow in Workflow.objects.order_by("-updated_at").prefetch_related(
            Prefetch("versions", queryset=live.order_by("-number"), to_attr="live_versions"))[:limit]:
        by_state: dict[str, list[Any]] = {}
        for version in workflow.live_versions:
            by_state.setdefault(version.state, []).append(version)
        rows.append(WorkflowRow(workflow, (by_state.get(VersionState.PRODUCTION) or [None])[0],
                                (by_state.get(VersionState.STAGING) or [None])[0],
                                len(by_state.get(VersionState.DRAFT, []))))
    return rows


def sends_today(now: dt.datetime | None = None) -> Today:
    from campaigns.models import Message, MessageStatus

    start = timezone.localtime(now or timezone.now()).replace(hour=0, minute=0, second=0, microsecond=0)
    # updated_at >= start lets message_status_idx (status, -updated_at) answer; a message's last
    # update is never before it was sent or failed.
    today = Message.objects.filter(updated_at__gte=start)
    return Today(
        sent=today.filter(status=MessageStatus.SENT, sent_at__gte=start).count(),
        failed=today.filter(Q(status=MessageStatus.FAILED) | Q(status=MessageStatus.BOUNCED)).count(),
        queued=Message.objects.filter(status__in=[MessageStatus.QUEUED, MessageStatus.DEFERRED]).count(),
    )


def marketer_dashboard() -> dict[str, Any]:
    return {"recent_imports": recent_imports(), "segments": segments_with_counts(),
            "workflows": workflows_with_state(), "today": sends_today()}
