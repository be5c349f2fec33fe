"""The data migration to sites: one site per existing source, patients split per site, group roles kept."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("studies", "0003_groups"), ("training", "0003_per_case_results_gate_decision_rule")]
AFTER = [("studies", "0006_site_required_patient_unique_per_site"), ("training", "0004_explicit_permissions")]


@pytest.fixture
def migrator():
    """A migration executor; afterwards the schema is migrated back to the latest state, so the tests that
    run after this one (pytest-django runs transactional tests last) find every table and column."""
    yield MigrationExecutor(connection)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_existing_sources_become_sites_and_a_patient_seen_at_two_becomes_two_patients(migrator):
    executor = migrator
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    User, Group = old.get_model("auth", "User"), old.get_model("auth", "Group")
    Patient, Study = old.get_model("studies", "Patient"), old.get_model("studies", "Study")
    rita = User.objects.create(username="rita")
    # 0003_groups made the group, but an earlier transactional test's flush may have deleted that row.
    rita.groups.add(Group.objects.get_or_create(name="reviewer")[0])
    boss = User.objects.create(username="boss", is_staff=True)
    shared = Patient.objects.create(ref="P-1")
    for i, source in enumerate(["Hospital A", "Hospital A", "hospital-b", ""]):
        Study.objects.create(patient=shared, sha256=f"{i:064d}", width=1, height=1, source=source, image="x.png")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    Site, Study = new.get_model("studies", "Site"), new.get_model("studies", "Study")
    Membership = new.get_model("studies", "SiteMembership")

    assert sorted(Site.objects.values_list("slug", flat=True)) == ["default", "hospital-a", "hospital-b"]
    rows = list(Study.objects.order_by("id").values_list("source", "site__slug", "patient__site__slug", "patient__ref"))
    assert rows == [
        ("hospital-a", "hospital-a", "hospital-a", "P-1"),
        ("hospital-a", "hospital-a", "hospital-a", "P-1"),
        ("hospital-b", "hospital-b", "hospital-b", "P-1"),
        ("default", "default", "default", "P-1"),
    ]
    assert new.get_model("studies", "Patient").objects.count() == 3
    assert set(Membership.objects.filter(user_id=rita.pk).values_list("role", flat=True)) == {"reviewer"}
    assert Membership.objects.filter(user_id=rita.pk).count() == 3
    assert new.get_model("auth", "User").objects.get(pk=boss.pk).groups.filter(name="ml-lead").exists()
