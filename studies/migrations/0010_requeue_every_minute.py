"""The requeue job also brings back studies whose worker died (past the prediction lease): run it
every minute instead of every five, so a lost study waits about a lease, not five minutes more."""

from django.db import migrations

TASK = "inference.requeue_stale_studies"


def every_minute(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    schedule, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.filter(task=TASK).update(interval=schedule, name="Re-dispatch stale studies (queued or lost)")


def every_five_minutes(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    schedule, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.filter(task=TASK).update(interval=schedule, name="Re-dispatch studies left queued")


class Migration(migrations.Migration):
    dependencies = [("studies", "0009_study_attempts"), ("training", "0002_periodic_tasks")]
    operations = [migrations.RunPython(every_minute, every_five_minutes)]
