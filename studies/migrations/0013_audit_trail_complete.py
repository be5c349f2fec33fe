import django.db.models.deletion
from django.db import migrations, models


def events_site_from_studies(apps, schema_editor):
    """Earlier rows get their study's site: from the study, or for a deletion from its "site <slug>" detail."""
    AccessEvent = apps.get_model("studies", "AccessEvent")
    Study = apps.get_model("studies", "Study")
    Site = apps.get_model("studies", "Site")
    sites = dict(Site.objects.values_list("slug", "pk"))
    for event in AccessEvent.objects.filter(study_id_ref__isnull=False).iterator():
        site_id = Study.objects.filter(pk=event.study_id_ref).values_list("site_id", flat=True).first()
        if site_id is None and event.detail.startswith("site "):
            site_id = sites.get(event.detail.removeprefix("site "))
        if site_id is not None:
            AccessEvent.objects.filter(pk=event.pk).update(site_id=site_id)


class Migration(migrations.Migration):
    dependencies = [
        ("studies", "0012_access_events"),
    ]

    operations = [
        migrations.AddField(
            model_name="accessevent",
            name="site",
            field=models.ForeignKey(
                blank=True,
                help_text="The study's site.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="studies.site",
            ),
        ),
        migrations.AlterField(
            model_name="accessevent",
            name="action",
            field=models.CharField(
                choices=[
                    ("upload", "Study uploaded"),
                    ("import", "Study imported"),
                    ("release", "Held study released"),
                    ("image", "Image viewed"),
                    ("heatmap", "Heatmap viewed"),
                    ("review", "Study read"),
                    ("adjudicate", "Study adjudicated"),
                    ("reject", "Study rejected"),
                    ("send_back", "Study sent back"),
                    ("export", "Dataset exported"),
                    ("delete", "Study deleted"),
                    ("promote", "Model version activated"),
                    ("override", "Model version activated against the gate"),
                    ("login", "Logged in"),
                    ("login_failed", "Login failed"),
                ],
                db_index=True,
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="accessevent",
            name="username",
            field=models.CharField(
                help_text="Kept when the account is deleted; for a failed login, the name tried.", max_length=150
            ),
        ),
        migrations.RunPython(events_site_from_studies, migrations.RunPython.noop),
    ]
