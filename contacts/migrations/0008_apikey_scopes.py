"""API keys get scopes (issue 14): each /api/v1/ endpoint needs one.

Keys that exist when this runs keep the access they had, all four scopes, so production
integrations do not start failing with 403 on deploy; new keys default to events:write only.
Narrow the old keys in the admin (Contacts -> API keys) to what each integration uses
(docs/event-api.md, "Scopes").
"""

from django.db import migrations, models

import contacts.models

# Every scope that exists in this migration: what any key could do before scopes.
FULL_ACCESS = ["events:write", "contacts:read", "contacts:write", "bounces:write"]


def existing_keys_keep_full_access(apps, schema_editor):
    apps.get_model("contacts", "ApiKey").objects.update(scopes=FULL_ACCESS)


class Migration(migrations.Migration):

    dependencies = [
        ('contacts', '0007_contact_score_table'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='scopes',
            field=models.JSONField(default=contacts.models.api_key_default_scopes, help_text='What the key may do; a request outside them is refused with 403', validators=[contacts.models.validate_api_scopes]),
        ),
        # Reversing drops the column; nothing to undo here.
        migrations.RunPython(existing_keys_keep_full_access, migrations.RunPython.noop, elidable=True),
    ]
