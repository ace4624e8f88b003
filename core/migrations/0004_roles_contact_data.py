"""Re-apply core/roles.py now that custom fields, tags, lists, imports and audit entries exist."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_audit_entry"),
        ("contacts", "0002_imports_fields_tags_lists"),
    ]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
