"""Operators' CLI for CRM sync (issue 16):

    manage.py crm status                 every connection: queue per status, pause, last error
    manage.py crm resync NAME            queue every contact on the connection (sent even if unchanged)
    manage.py crm retry-failed NAME      queue the connection's failed contacts again (after a fix)

The same services as the admin's actions; each change is audited as actor "cli"."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from automation.crm.models import CrmConnection, CrmSyncItem, SyncStatus
from automation.crm.selectors import connection_status_counts
from automation.crm.services import crm_resync_all, crm_retry_failed


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:150]
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


class Command(BaseCommand):
    help = "CRM sync for operators: status, resync NAME, retry-failed NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, title="actions")
        sub.add_parser("status", help="every connection's queue, pause and latest error")
        for name, text in (("resync", "queue every contact on the connection"),
                           ("retry-failed", "queue the connection's failed contacts again")):
            cmd = sub.add_parser(name, help=text)
            cmd.add_argument("name", help="the connection's name (see `crm status`)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "status":
            return self.status()
        conn = CrmConnection.objects.filter(name=options["name"]).first()
        if conn is None:
            known = ", ".join(CrmConnection.objects.order_by("name").values_list("name", flat=True)) or "none"
            raise CommandError(f"no CRM connection named {options['name']!r} (connections: {known})")
        if action == "resync":
            count = crm_resync_all(connection=conn, actor=_actor())
            self.stdout.write(f"{conn.name}: {count} contact(s) queued for a full resync")
        else:
            count = crm_retry_failed(connection=conn, actor=_actor())
            self.stdout.write(f"{conn.name}: {count} failed contact(s) queued again")

    def status(self) -> None:
        now = timezone.now()
        connections = list(CrmConnection.objects.order_by("name"))
        if not connections:
            self.stdout.write("no CRM connections")
            return
        for conn in connections:
            counts = connection_status_counts(connection=conn)
            state = "active" if conn.is_active else "inactive"
            if conn.paused_until and conn.paused_until > now:
                state += f", paused until {conn.paused_until:%Y-%m-%d %H:%M} UTC (daily API limit spent)"
            queue = ", ".join(f"{counts.get(s, 0)} {s}" for s in SyncStatus.values)
            self.stdout.write(f"{conn.name} [{conn.kind}{', sandbox' if conn.is_sandbox else ''}, {state}]: {queue}")
            latest = CrmSyncItem.objects.filter(connection=conn, status=SyncStatus.FAILED).exclude(
                last_error="").order_by("-id").values_list("last_error", flat=True).first()
            if latest:
                self.stdout.write(f"  latest error: {latest[:200]}")
