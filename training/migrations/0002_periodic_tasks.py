"""The beat schedule lives in the database (editable in the admin); these are its defaults."""

import json

from django.db import migrations


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour="2", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name="Nightly retraining (when enough new reviews)",
        defaults={"task": "training.retrain_if_due", "crontab": nightly, "kwargs": json.dumps({})},
    )
    every_five, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(
        name="Re-dispatch studies left queued",
        defaults={
            "task": "inference.requeue_stale_studies",
            "interval": every_five,
            "kwargs": json.dumps({}),
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        task__in=["training.retrain_if_due", "inference.requeue_stale_studies"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("training", "0001_initial"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(create_schedule, remove_schedule)]
