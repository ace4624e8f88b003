"""Contact.score and Contact.grade move to a narrow table of their own (ContactScore).

Existing scores are copied (contacts with score 0 and no grade need no row); backwards, they are
copied back before the table goes.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('contacts', '0006_lean_contact_event_membership_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='ContactScore',
            fields=[
                ('contact', models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='scorecard', serialize=False, to='contacts.contact')),
                ('score', models.IntegerField(default=0)),
                ('grade', models.CharField(blank=True, default='', max_length=2)),
            ],
        ),
        migrations.RunSQL(
            sql="INSERT INTO contacts_contactscore (contact_id, score, grade)"
                " SELECT id, score, grade FROM contacts_contact WHERE score <> 0 OR grade <> ''",
            # Backwards this runs after the columns are back (default 0 and ''), before the table goes.
            reverse_sql="UPDATE contacts_contact SET score = s.score, grade = s.grade FROM contacts_contactscore s"
                        " WHERE s.contact_id = contacts_contact.id",
        ),
        migrations.RemoveIndex(
            model_name='contact',
            name='contact_score_idx',
        ),
        migrations.RemoveField(
            model_name='contact',
            name='grade',
        ),
        migrations.RemoveField(
            model_name='contact',
            name='score',
        ),
        migrations.AddIndex(
            model_name='contactscore',
            index=models.Index(condition=models.Q(('score', 0), _negated=True), fields=['-score', '-contact'], name='contactscore_rank_idx'),
        ),
    ]
