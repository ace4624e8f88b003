"""Reads for the CRM admin and the workflow screens."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from automation.crm.models import CrmConnection, CrmSyncItem, CrmSyncLog


def connection_status_counts(*, connection: CrmConnection) -> dict[str, int]:
    """Rows per status for one connection (served by crmsyncitem_status_idx)."""
    rows = CrmSyncItem.objects.filter(connection=connection).values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def contact_sync_log(*, contact_id: int, limit: int = 50) -> QuerySet[CrmSyncLog]:
    """A contact's sync history across connections, newest first (crmsynclog_contact_idx)."""
    return CrmSyncLog.objects.filter(contact_id=contact_id).select_related("connection").order_by("-at", "-id")[:limit]


def connection_log(*, connection: CrmConnection, limit: int = 50) -> QuerySet[CrmSyncLog]:
    """A connection's recent log (crmsynclog_connection_idx)."""
    return CrmSyncLog.objects.filter(connection=connection).select_related("contact").order_by("-at", "-id")[:limit]
