"""Create an API key for the event and contact API; the key is printed once and never stored."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from contacts.apikeys import api_key_create
from contacts.models import API_KEY_DEFAULT_RATE_PER_MINUTE, ApiScope, api_key_default_scopes


class Command(BaseCommand):
    help = "Create an API key (printed once: store it now; only its hash is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="unique name; events it sends have source api:<name>")
        parser.add_argument("--rate-limit", type=int, default=API_KEY_DEFAULT_RATE_PER_MINUTE,
                            help=f"requests per minute (default {API_KEY_DEFAULT_RATE_PER_MINUTE})")
        parser.add_argument("--no-create-contacts", action="store_true",
                            help="events for unknown emails are errors instead of creating contacts")
        parser.add_argument("--scope", action="append", dest="scopes", choices=ApiScope.values, metavar="SCOPE",
                            help=f"what the key may do; repeat for more than one. One of: {', '.join(ApiScope.values)}"
                                 f" (default: {' '.join(api_key_default_scopes())} only)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rate_limit"] < 1:
            raise CommandError("--rate-limit must be at least 1")
        try:
            key, raw = api_key_create(
                name=options["name"], created_by=None, rate_limit_per_minute=options["rate_limit"],
                create_unknown_contacts=not options["no_create_contacts"],
                scopes=list(dict.fromkeys(options["scopes"])) if options["scopes"] else None,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
                               ) from None
        self.stderr.write(f"Created API key {key.name!r} (prefix {key.prefix}, scopes {' '.join(key.scopes)}). "
                          "It is shown only now:")
        self.stdout.write(raw)
