"""Report (and with --fix, rewrite) contact and suppression addresses not in canonical form.

Rows written before the canonical rule (contacts/emails.py) may hold a look-alike spelling: a
fullwidth or Unicode domain, a soft hyphen. Delivery already compares canonical forms and never
sends to a refused address, so nothing is mailed wrongly meanwhile; this makes the rows match.

    manage.py contacts_email_audit          # report only: one line per row, nothing changes
    manage.py contacts_email_audit --fix    # also rewrite rows whose canonical form is free

Never merges: a contact whose canonical address another contact already has (a collision), and
an address the rule refuses, are reported for a person to resolve (merge or erase in the admin).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import Q

from campaigns.models import Suppression, email_hash
from contacts.emails import InvalidEmail, email_canonical
from contacts.models import Contact

# Canonical addresses are lower-case ASCII: only rows with something else need the Python check.
_SUSPECT = Q(email__regex=r"[^-a-z0-9.@!#$%&'*+/=?^_`{|}~]") | Q(email__contains="xn--") | Q(email__contains="--")


class Command(BaseCommand):
    help = "Report contacts and suppressions whose address is not canonical; --fix rewrites the free ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="rewrite rows whose canonical form is not taken")

    def handle(self, *args: Any, fix: bool = False, **options: Any) -> None:
        counts = {"fixed": 0, "collision": 0, "refused": 0, "rewritable": 0}
        for pk, email in Contact.objects.filter(_SUSPECT).order_by("pk").values_list("pk", "email").iterator():
            self._contact(pk, email, fix, counts)
        for pk, email, hashed in Suppression.objects.exclude(email="").filter(_SUSPECT).order_by("pk") \
                .values_list("pk", "email", "email_hash").iterator():
            self._suppression(pk, email, hashed, fix, counts)
        self.stdout.write(" ".join(f"{name}={n}" for name, n in counts.items()))

    def _contact(self, pk: int, email: str, fix: bool, counts: dict[str, int]) -> None:
        try:
            canonical = email_canonical(email)
        except InvalidEmail as exc:
            counts["refused"] += 1
            self.stdout.write(f"contact {pk} {email!r}: refused ({exc}); delivery skips it: fix or erase it")
            return
        if canonical == email:
            return
        other = Contact.objects.filter(email=canonical).exclude(pk=pk).values_list("pk", flat=True).first()
        if other is not None:
            counts["collision"] += 1
            self.stdout.write(f"contact {pk} {email!r}: collision: contact {other} is {canonical!r}; merge by hand")
        elif fix:
            with transaction.atomic():
                Contact.objects.filter(pk=pk, email=email).update(email=canonical)
            counts["fixed"] += 1
            self.stdout.write(f"contact {pk} {email!r}: now {canonical!r}")
        else:
            counts["rewritable"] += 1
            self.stdout.write(f"contact {pk} {email!r}: would become {canonical!r} (--fix)")

    def _suppression(self, pk: int, email: str, hashed: str, fix: bool, counts: dict[str, int]) -> None:
        try:
            canonical = email_canonical(email)
        except InvalidEmail as exc:
            counts["refused"] += 1
            self.stdout.write(f"suppression {pk} {email!r}: refused ({exc}); kept as it is")
            return
        if canonical == email and hashed == email_hash(canonical):
            return
        if Suppression.objects.filter(email_hash=email_hash(canonical)).exclude(pk=pk).exists():
            # The canonical address is suppressed already: this row is a harmless duplicate.
            counts["collision"] += 1
            self.stdout.write(f"suppression {pk} {email!r}: {canonical!r} is suppressed by another row")
        elif fix:
            Suppression.objects.filter(pk=pk).update(email=canonical, email_hash=email_hash(canonical))
            counts["fixed"] += 1
            self.stdout.write(f"suppression {pk} {email!r}: now {canonical!r}")
        else:
            counts["rewritable"] += 1
            self.stdout.write(f"suppression {pk} {email!r}: would become {canonical!r} (--fix)")
