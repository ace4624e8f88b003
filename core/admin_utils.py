"""Helpers for admin screens over big tables (healthchecks' hc/accounts/admin.py idea)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.http import HttpRequest


class EstimatedCountPaginator(Paginator):
    """Use Postgres' planner estimate for an unfiltered table's size instead of COUNT(*).

    COUNT(*) over a million contacts costs a sequential scan on every page view; the
    estimate is free and good enough for page links. Filtered lists still count exactly
    (they are small, and the admin shows their count).
    """

    @cached_property
    def count(self) -> int:
        qs: Any = self.object_list
        query = getattr(qs, "query", None)
        if query is not None and not query.where and connections[qs.db].vendor == "postgresql":
            with connections[qs.db].cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [qs.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > 10_000:
                return int(row[0])
        return super().count


class ReadOnlyAdmin(admin.ModelAdmin):
    """A history written by the code only (ledger, events, audit trail, sync logs, versions): listed
    and opened, never added, edited or deleted here; big, so counted by estimate."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
