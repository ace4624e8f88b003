"""Every open, click (with its link), unsubscribe and soft bounce of a message as an append-only row
(issue 21 item 4: reports). A new table: nothing existing is rewritten or locked."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('campaigns', '0011_revision_topic'),
    ]

    operations = [
        migrations.CreateModel(
            name='MessageEngagement',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.PositiveSmallIntegerField(choices=[(1, 'Open'), (2, 'Click'), (3, 'Unsubscribe'), (4, 'Soft bounce')])),
                ('link_index', models.PositiveSmallIntegerField(blank=True, help_text="Clicks: the index into the message's links", null=True)),
                ('occurred_at', models.DateTimeField()),
                ('message', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='campaigns.message')),
            ],
            options={
                'indexes': [models.Index(fields=['message', 'occurred_at'], name='engagement_message_idx')],
                'constraints': [models.CheckConstraint(condition=models.Q(('kind__in', [1, 2, 3, 4])), name='engagement_kind_valid'), models.CheckConstraint(condition=models.Q(models.Q(('kind', 2), ('link_index__isnull', False)), models.Q(models.Q(('kind', 2), _negated=True), ('link_index__isnull', True)), _connector='OR'), name='engagement_link_only_clicks')],
            },
        ),
    ]
