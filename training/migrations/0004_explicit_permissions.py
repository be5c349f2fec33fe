"""Explicit permissions for training, promotion, gate overrides and exports (not ``is_staff``),
granted to the ``ml-lead`` group; existing staff keep them through that group."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "ml-lead"
PERMISSIONS = [
    ("modelversion", "promote_modelversion"),
    ("modelversion", "override_modelversion"),
    ("trainingrun", "start_trainingrun"),
    ("datasetsnapshot", "export_datasetsnapshot"),
]


def grant(apps, schema_editor):
    config = apps.get_app_config("training")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0)
    config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    User = apps.get_model("auth", "User")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(
        *[
            Permission.objects.get(content_type__app_label="training", content_type__model=model, codename=codename)
            for model, codename in PERMISSIONS
        ]
    )
    for user in User.objects.filter(is_staff=True):
        user.groups.add(group)


def ungrant(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0003_per_case_results_gate_decision_rule"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="datasetsnapshot",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("export_datasetsnapshot", "Can export a dataset snapshot (images and labels)")],
            },
        ),
        migrations.AlterModelOptions(
            name="modelversion",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [
                    ("promote_modelversion", "Can activate a model version the gate accepts (promote or roll back)"),
                    ("override_modelversion", "Can activate a model version the gate refuses (override)"),
                ],
            },
        ),
        migrations.AlterModelOptions(
            name="trainingrun",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("start_trainingrun", "Can start a training run")],
            },
        ),
        migrations.RunPython(grant, ungrant),
    ]
