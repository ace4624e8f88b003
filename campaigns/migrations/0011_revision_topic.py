"""A template revision pins the topic its marketing sends go under (issue 20), so a new topic
reaches production only with a promoted version. Existing revisions take their template's topic:
until now production sent under the template's current topic, so nothing changes for it today."""

import hashlib
import json

import django.db.models.deletion
from django.db import migrations, models


def _hash(r):  # campaigns.models.template_content_hash with a topic, frozen here
    payload = json.dumps([r.kind, r.subject, r.html, r.text, r.topic_id], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def pin_current_topics(apps, schema_editor):
    Revision = apps.get_model("campaigns", "EmailTemplateRevision")
    for revision in Revision.objects.filter(template__topic__isnull=False).select_related("template").iterator():
        revision.topic_id = revision.template.topic_id
        revision.content_hash = _hash(revision)
        revision.save(update_fields=["topic", "content_hash"])


class Migration(migrations.Migration):

    dependencies = [
        ('campaigns', '0010_template_topic'),
        ('consent', '0001_consent_history_topics_forms'),
    ]

    operations = [
        migrations.AddField(
            model_name='emailtemplaterevision',
            name='topic',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='consent.topic'),
        ),
        migrations.RunPython(pin_current_topics, migrations.RunPython.noop),
    ]
