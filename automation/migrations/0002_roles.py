"""Re-apply core/roles.py for workflows (view/build for marketers, promote for approvers, ops reads)."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [
        ("automation", "0001_initial"),
        ("core", "0005_roles_events_scoring"),
    ]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
