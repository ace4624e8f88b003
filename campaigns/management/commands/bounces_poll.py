"""manage.py bounces_poll [--sender NAME]: read the bounce mailboxes once (what the scheduler does
every 5 minutes), printing what each mailbox held."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns.bounce_mailbox import MailboxError, bounce_mailboxes_poll
from campaigns.models import SenderProfile


class Command(BaseCommand):
    help = "Poll the IMAP bounce mailboxes of sender profiles once (all configured ones, or one sender's)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sender", help="Only this sender profile's mailbox (its name)")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options.get("sender")
        if name is not None:
            sender = SenderProfile.objects.filter(name=name).first()
            if sender is None:
                raise CommandError(f"no sender profile named {name!r}")
            if not sender.bounce_imap_host:
                raise CommandError(f"sender {name!r} has no bounce mailbox (set its IMAP host)")
        outcomes = bounce_mailboxes_poll(sender_name=name)
        if not outcomes:
            self.stdout.write("No sender profile has a bounce mailbox.")
        failed = []
        for sender_name, outcome in outcomes:
            if isinstance(outcome, MailboxError):
                failed.append(f"{sender_name}: {outcome}")
                continue
            more = f", {outcome.left} left for the next poll" if outcome.left else ""
            self.stdout.write(f"{sender_name} ({outcome.mailbox}): {outcome.processed} processed, {outcome.ignored} "
                              f"ignored, {outcome.unparsed} unparsed, {outcome.already} already recorded{more}")
            for line in outcome.details:
                self.stdout.write(f"  {line}")
        if failed:
            raise CommandError("; ".join(failed))
