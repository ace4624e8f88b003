"""Create the Marketer, Approver, Sales and Ops groups with their permissions (core/roles.py)."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_initial"),
        ("contacts", "0001_initial"),
        ("django_rq", "0003_alter_dashboard_permission_names"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
