# Issue 16: value mapping per connection, HubSpot API version, the account's time zone and the
# daily-limit pause.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("crm", "0003_correlation_id"),
    ]

    operations = [
        migrations.AddField(
            model_name="crmconnection",
            name="value_mapping",
            field=models.JSONField(
                blank=True, default=dict,
                help_text='Per mapped field, our value -> the CRM\'s value for enumeration properties, e.g. '
                          '{"lifecycle_stage": {"mql": "marketingqualifiedlead"}}. HubSpot: lifecycle_stage mapped to '
                          "lifecyclestage defaults to HubSpot's internal stage names. Values without an entry are "
                          "sent as they are."),
        ),
        migrations.AddField(
            model_name="crmconnection",
            name="api_version",
            field=models.CharField(
                default="v3", max_length=10,
                help_text='HubSpot API path version: "v3" (/crm/v3/objects/...) or a date version such as "2026-03" '
                          "(/crm/objects/2026-03/...)"),
        ),
        migrations.AddField(
            model_name="crmconnection",
            name="account_time_zone",
            field=models.CharField(
                default="UTC", max_length=64,
                help_text="The CRM account's time zone (HubSpot: Settings > Account defaults); its daily API limit "
                          "resets at midnight there"),
        ),
        migrations.AddField(
            model_name="crmconnection",
            name="paused_until",
            field=models.DateTimeField(
                blank=True, editable=False, null=True,
                help_text="The CRM's daily API limit is spent: nothing is sent before this (its next midnight)"),
        ),
    ]
