"""Re-apply core/roles.py now that custom fields, tags, lists, imports and audit entries exist."""

from django.db import migrations


def apply_roles(apps, schema_editor):  # type: ignore[no-untyped-def]
    from core.roles import sync_roles

    sync_roles(apps, strict=False)


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_audit_entry"),
        ("contacts", "0002_imports_fields_tags_lists"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
