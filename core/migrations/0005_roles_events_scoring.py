"""Re-apply core/roles.py for events, segments, API keys and scoring."""

from django.db import migrations

from core.roles import migrate_roles


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0004_roles_contact_data"),
        ("contacts", "0003_events_segments_api_keys_scores"),
        ("scoring", "0001_initial"),
    ]

    operations = [migrations.RunPython(migrate_roles, migrations.RunPython.noop)]
