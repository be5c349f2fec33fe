"""The model registry: register versions, judge them with the gate, change the active model."""

from functools import partial
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import connection, transaction

from config.celery import task_send
from inference.services import DecisionRule, LoadedModel, load_model
from studies.audit import access_record
from studies.models import AccessEvent
from studies.tasks import repredict_unreviewed_task
from training.gate import EMPTY_TEST_SPLIT, FIRST_VERSION, GateDecision, GatePolicy, gate_decide
from training.models import DatasetSnapshot, ModelActivation, ModelVersion
from training.selectors import evaluation_case_sets, evaluation_cases_exist

MIN_OVERRIDE_REASON = 10


def gate_policy() -> GatePolicy:
    config = settings.PROMOTION
    return GatePolicy(
        non_inferiority_margin=config["NON_INFERIORITY_MARGIN"],
        min_source_patients=config["MIN_SOURCE_PATIENTS"],
        min_class_cases=config["MIN_CLASS_CASES"],
        bootstrap_rounds=config["BOOTSTRAP_ROUNDS"],
        promote_ties=config["PROMOTE_TIES"],
        required_sensitivities=tuple(config["REQUIRED_SENSITIVITIES"]),
    )


def model_version_gate(*, candidate: ModelVersion, active: ModelVersion | None) -> GateDecision:
    """The gate on the stored per-case results of both versions on the candidate's test split."""
    if active is None:
        return GateDecision(True, FIRST_VERSION)
    if candidate.snapshot_id is None:
        return GateDecision(False, f"{candidate.name} has no test split of its own to be compared on.")
    pair = evaluation_case_sets(candidate=candidate, active=active, snapshot_id=candidate.snapshot_id)
    if pair is None and not evaluation_cases_exist(version=candidate, snapshot_id=candidate.snapshot_id):
        return GateDecision(False, EMPTY_TEST_SPLIT)
    if pair is None:
        return GateDecision(
            False,
            f"The active model {active.name} was not scored on {candidate.name}'s test split "
            f"(snapshot {candidate.snapshot_id}), so the gate cannot compare them case by case.",
        )
    return gate_decide(candidate=pair[0], active=pair[1], policy=gate_policy())


def model_version_register(
    *,
    name: str,
    artifact_path: Path,
    architecture: str,
    class_names: list[str],
    input_size: int,
    metrics: dict | None = None,
    hyperparameters: dict | None = None,
    decision_rule: dict | None = None,
    model_card: str = "",
    snapshot: DatasetSnapshot | None = None,
) -> ModelVersion:
    """Copy an artifact into media and record it as a candidate version."""
    version = ModelVersion(
        name=name,
        architecture=architecture,
        class_names=class_names,
        input_size=input_size,
        metrics=metrics or {},
        hyperparameters=hyperparameters or {},
        decision_rule=decision_rule or {},
        model_card=model_card,
        snapshot=snapshot,
    )
    with open(artifact_path, "rb") as handle:
        version.artifact.save(f"{name}.keras", File(handle), save=False)
    try:
        version.full_clean()
        version.save()
    except Exception:
        version.artifact.delete(save=False)
        raise
    return version


def model_version_decision_rule(version: ModelVersion) -> DecisionRule:
    """The version's deployed rule; versions from before decision rules keep their temperature."""
    if version.decision_rule:
        return DecisionRule.from_dict(version.decision_rule)
    return DecisionRule(temperature=float(version.metrics.get("temperature", 1.0)))


def model_version_load(*, version: ModelVersion) -> LoadedModel:
    """The version in the inference runtime, loaded once per process and version."""
    return load_model(
        version.artifact.path,
        key=f"{version.pk}:{version.name}",
        class_names=version.class_names,
        input_size=version.input_size,
        decision=model_version_decision_rule(version),
    )


PROMOTION_LOCK = 0x6378_7270  # "cxrp": the advisory lock key that serializes promotions


def _promotions_one_at_a_time() -> None:
    """A promotion waits for one in flight, then judges against the version that one activated. Locking
    the active row alone is not enough on PostgreSQL: the waiting promotion re-checks that row after
    the other commits, finds it no longer active, and saw no active model (the gate's "first version")
    and then broke the one-active constraint with a 500. SQLite's writers queue anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PROMOTION_LOCK])


@transaction.atomic
def model_version_promote(
    *,
    model_version: ModelVersion,
    user: AbstractBaseUser | None,
    reason: str,
    override: bool = False,
    address: str = "",
) -> ModelVersion:
    """Make a version the active one; the only way the active model changes, every path included.

    The gate judges the version against the active model on its stored per-case results. When it
    refuses, only an ``override`` with a written ``reason`` activates the version (a roll-back
    usually is one); the activation log keeps who, why and what the gate said, the audit trail
    who and from where (``address``)."""
    _promotions_one_at_a_time()
    previous = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    if previous is not None and previous.pk == model_version.pk:
        return model_version
    decision = model_version_gate(candidate=model_version, active=previous)
    if not decision.promote:
        if not override:
            raise ValidationError(
                f"The promotion gate refuses {model_version.name}: {decision.reason} "
                "Staff may override it with a written reason."
            )
        if len(reason.strip()) < MIN_OVERRIDE_REASON:
            raise ValidationError({"reason": "Overriding the promotion gate needs a written reason."})
    if previous is not None:
        previous.is_active = False
        previous.status = ModelVersion.Status.RETIRED
        previous.save(update_fields=["is_active", "status"])
    model_version.is_active = True
    model_version.status = ModelVersion.Status.ACTIVE
    model_version.save(update_fields=["is_active", "status"])
    ModelActivation.objects.create(
        model_version=model_version,
        previous=previous,
        activated_by=user,
        reason=reason,
        override=not decision.promote,
        gate_reason=decision.reason,
    )
    access_record(
        user=user,
        action=AccessEvent.Action.PROMOTE if decision.promote else AccessEvent.Action.OVERRIDE,
        detail=f"model {model_version.name} (model {model_version.pk}), was {previous.name if previous else 'none'}",
        address=address,
    )
    # Open studies get the new model's answer too (in the background, low priority).
    # The promotion stands whatever the broker does: unreachable, the open studies keep their old
    # answers (the study page says which version answered) and task_send logs it.
    transaction.on_commit(partial(task_send, repredict_unreviewed_task, model_version.pk))
    return model_version
