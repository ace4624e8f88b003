"""Re-apply core/roles.py: Ops sees and clears login lockouts (django-axes)."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [("core", "0009_roles_incidents"), ("axes", "0010_accessattemptexpiration")]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
