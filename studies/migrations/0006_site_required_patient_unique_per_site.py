"""Every study and patient has a site now (0005); a patient key is unique per site."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("studies", "0005_sites_from_sources")]

    operations = [
        migrations.AlterField(
            model_name="patient",
            name="site",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="patients", to="studies.site"
            ),
        ),
        migrations.AlterField(
            model_name="study",
            name="site",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="studies", to="studies.site"
            ),
        ),
        migrations.AlterField(
            model_name="study",
            name="source",
            field=models.CharField(
                blank=True,
                db_index=True,
                help_text="The site's slug (set from ``site``), for per-source results.",
                max_length=100,
            ),
        ),
        migrations.AddConstraint(
            model_name="patient",
            constraint=models.UniqueConstraint(fields=("site", "ref"), name="unique_patient_ref_per_site"),
        ),
    ]
