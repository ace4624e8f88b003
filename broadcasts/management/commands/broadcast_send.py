"""manage.py broadcast_send <key>: send an approved broadcast as scheduled (as the API's
POST /api/v1/campaigns/<key>/send and the admin's "Send")."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcasts.models import Broadcast
from broadcasts.services import broadcast_send


class Command(BaseCommand):
    help = "Send an approved broadcast now, or schedule it, as its schedule says."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", help="The broadcast's key")

    def handle(self, *args: Any, **options: Any) -> None:
        key = options["key"]
        broadcast = Broadcast.objects.select_related("sender").filter(key=key).first()
        if broadcast is None:
            known = ", ".join(Broadcast.objects.order_by("-id").values_list("key", flat=True)[:10])
            raise CommandError(f"no broadcast with key {key!r}" + (f" (recent: {known})" if known else ""))
        try:
            broadcast = broadcast_send(broadcast=broadcast, actor="manage.py broadcast_send")
        except ValidationError as exc:
            raise CommandError(f"{key}: {' '.join(exc.messages)}") from None
        when = f" at {broadcast.send_at:%Y-%m-%d %H:%M %Z}" if broadcast.status == "scheduled" else ""
        self.stdout.write(f"{broadcast.key}: {broadcast.status}{when}, {broadcast.recipients_total} recipient(s)")
