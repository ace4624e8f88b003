from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from core.demo import credentials_path, seed_contacts, seed_delivery, seed_scoring, seed_users


class Command(BaseCommand):
    help = "Load demo data: a few hundred contacts and the users admin, marketer, approver, sales, ops."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--contacts", type=int, default=300)
        parser.add_argument(
            "--force", action="store_true", help="allow with DEBUG off (creates staff users!)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_demo creates staff users with printed passwords; refusing with DEBUG off (use --force)"
            )
        with transaction.atomic():
            created = seed_contacts(options["contacts"])
            logins = seed_users()
            events = seed_scoring()
            templates = seed_delivery()
        self.stdout.write(f"Demo contacts: {created} new ({options['contacts']} in the demo set); "
                          f"{events} new demo events scored; {templates} new email templates")
        self.stdout.write(f"Demo logins (kept in {credentials_path()}):")
        for username, password in logins.items():
            self.stdout.write(f"  {username:<9} {password}")
