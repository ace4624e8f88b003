"""Re-apply core/roles.py for the operations page and kill switches."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0006_switch"),
        ("campaigns", "0002_roles"),
        ("crm", "0002_roles"),
    ]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
