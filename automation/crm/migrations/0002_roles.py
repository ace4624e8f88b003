"""Re-apply core/roles.py for CRM sync (connections, sync queue, error list, log)."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0001_initial"),
        ("core", "0005_roles_events_scoring"),
    ]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
