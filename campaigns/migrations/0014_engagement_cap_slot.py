"""Review finding 7: the engagement table grew without bound (a bot replaying one email's pixel added
a row a second). Each row gets a slot, 1..ENGAGEMENT_CAP per message and kind, unique: at most that
many rows. Rows recorded before keep no slot (the partial index skips them; they still count
towards the cap). The column is nullable (no rewrite); on PostgreSQL the unique index is built
concurrently, so tracking hits are not blocked while it builds."""

from django.db import migrations, models

from core.migration_ops import OnPostgres

FORWARD = ["CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS engagement_one_row_per_slot"
           " ON campaigns_messageengagement (message_id, kind, slot) WHERE slot IS NOT NULL"]
BACKWARD = ["DROP INDEX CONCURRENTLY IF EXISTS engagement_one_row_per_slot"]


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ('campaigns', '0013_sns_notification_dedupe'),
    ]

    operations = [
        migrations.AddField(
            model_name='messageengagement',
            name='slot',
            field=models.PositiveSmallIntegerField(blank=True, help_text='1..100 per message and kind', null=True),
        ),
        OnPostgres(forward_sql=FORWARD, backward_sql=BACKWARD, operations=[
            migrations.AddConstraint(
                model_name='messageengagement',
                constraint=models.UniqueConstraint(condition=models.Q(('slot__isnull', False)),
                                                   fields=('message', 'kind', 'slot'),
                                                   name='engagement_one_row_per_slot'),
            ),
        ]),
    ]
