from django.db import migrations, models
from django.db.models import F

import training.models


def study_keys_from_studies(apps, schema_editor):
    apps.get_model("training", "SnapshotItem").objects.update(study_key=F("study_id"))


class Migration(migrations.Migration):
    """Erasing a study tombstones its snapshot items (study_key kept, withdrawn_at set) instead of being refused."""

    dependencies = [
        ("studies", "0013_audit_trail_complete"),
        ("training", "0004_explicit_permissions"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="snapshotitem", name="unique_study_per_snapshot"),
        migrations.AddField(
            model_name="snapshotitem",
            name="study_key",
            field=models.BigIntegerField(null=True, help_text="The study's id, kept when the study is erased."),
        ),
        migrations.RunPython(study_keys_from_studies, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="snapshotitem",
            name="study_key",
            field=models.BigIntegerField(help_text="The study's id, kept when the study is erased."),
        ),
        migrations.AddField(
            model_name="snapshotitem",
            name="withdrawn_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the study was erased: the case is withdrawn from this snapshot.",
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="snapshotitem",
            name="study",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=training.models.snapshot_item_withdraw,
                related_name="+",
                to="studies.study",
            ),
        ),
        migrations.AddConstraint(
            model_name="snapshotitem",
            constraint=models.UniqueConstraint(fields=("snapshot", "study_key"), name="unique_study_per_snapshot"),
        ),
    ]
