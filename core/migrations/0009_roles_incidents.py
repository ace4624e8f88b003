"""Re-apply core/roles.py: Ops reads the incident history."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [("core", "0008_incident")]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
