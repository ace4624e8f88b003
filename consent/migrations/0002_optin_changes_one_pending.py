from django.db import migrations, models


def expire_duplicate_pending(apps, schema_editor):  # noqa: ANN001, ANN201
    """Before the constraint: of a contact's pending requests keep the newest (its email is the
    latest the person got), expire the others."""
    OptInRequest = apps.get_model("consent", "OptInRequest")
    newest: dict[int, int] = {}
    for pk, contact_id in OptInRequest.objects.filter(status="pending").order_by("-id").values_list("pk", "contact_id"):
        newest.setdefault(contact_id, pk)
    OptInRequest.objects.filter(status="pending").exclude(pk__in=newest.values()).update(status="expired")


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0001_consent_history_topics_forms"),
    ]

    operations = [
        migrations.AddField(
            model_name="optinrequest",
            name="changes",
            field=models.JSONField(blank=True, default=dict, help_text="Held until confirmation"),
        ),
        migrations.RunPython(expire_duplicate_pending, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="optinrequest",
            constraint=models.UniqueConstraint(condition=models.Q(("status", "pending")), fields=("contact",),
                                               name="optin_one_pending_per_contact"),
        ),
    ]
