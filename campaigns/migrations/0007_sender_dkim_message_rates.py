# Issue 17 items 4 and 5: DKIM signing per sender profile (campaigns/dkim_signing.py); complaint
# and hard-bounce times on messages for the per-sender daily rates (core/ops.py sender_rates), with
# an index for the bounces.

from django.db import migrations, models

from core.migration_ops import OnPostgres

# The outbox is a big table: build the (empty, partial) index without blocking delivery.
FORWARD = ["CREATE INDEX CONCURRENTLY IF NOT EXISTS message_bounced_idx ON campaigns_message (bounced_at)"
           " WHERE bounced_at IS NOT NULL"]
BACKWARD = ["DROP INDEX CONCURRENTLY IF EXISTS message_bounced_idx"]


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ('campaigns', '0006_message_relay_id_delivered_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='senderprofile',
            name='dkim_domain',
            field=models.CharField(blank=True, help_text='Signing domain (d=), normally the From address\'s domain; empty: no DKIM', max_length=253),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='dkim_selector',
            field=models.CharField(blank=True, help_text='Selector (s=): the key is published at <selector>._domainkey.<domain>', max_length=63),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='dkim_key_env',
            field=models.CharField(blank=True, help_text='Environment variable holding the PEM private key (LEADFLOW_DKIM_...)', max_length=100),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='dkim_key_encrypted',
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.AddField(
            model_name='message',
            name='complained_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='message',
            name='bounced_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        OnPostgres(forward_sql=FORWARD, backward_sql=BACKWARD, operations=[
            migrations.AddIndex(
                model_name='message',
                index=models.Index(condition=models.Q(('bounced_at__isnull', False)), fields=['bounced_at'], name='message_bounced_idx'),
            ),
        ]),
    ]
