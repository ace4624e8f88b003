from typing import Any

from django.core.management.base import BaseCommand

from core.roles import ROLE_PERMISSIONS, sync_roles


class Command(BaseCommand):
    help = "Create the role groups and reset their permissions to core/roles.py."

    def handle(self, *args: Any, **options: Any) -> None:
        sync_roles()
        for role, perms in ROLE_PERMISSIONS.items():
            self.stdout.write(f"{role}: {len(perms)} permissions")
