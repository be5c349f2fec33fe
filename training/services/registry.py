"""The model registry: register versions, decide promotion, change the active model."""

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from django.db import transaction

from inference.services import LoadedModel, load_model
from training.models import DatasetSnapshot, ModelActivation, ModelVersion


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def _covid_sensitivity(metrics: dict) -> float | None:
    return (metrics.get("per_class") or {}).get("covid", {}).get("sensitivity")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def promotion_decision(*, candidate: dict, active: dict | None) -> GateDecision:
    """The gate: beat the active model on the frozen test split by the primary metric
    (ties broken by COVID sensitivity at 95% specificity) without losing COVID sensitivity
    beyond the tolerance. Both metric dicts must come from the same test cases."""
    config = settings.PROMOTION
    metric = config["PRIMARY_METRIC"]
    if active is None:
        return GateDecision(True, "No active model: the first version is activated.")
    new, old = candidate.get(metric), active.get(metric)
    if new is None:
        return GateDecision(False, f"Candidate's {metric} is undefined on the test split; kept as candidate.")
    if old is None:
        return GateDecision(True, f"Active model's {metric} is undefined on the test split; candidate has {new:.3f}.")
    new_sens, old_sens = _covid_sensitivity(candidate), _covid_sensitivity(active)
    tolerance = config["COVID_SENSITIVITY_TOLERANCE"]
    if new_sens is not None and old_sens is not None and new_sens < old_sens - tolerance:
        return GateDecision(
            False,
            f"COVID sensitivity would drop from {old_sens:.3f} to {new_sens:.3f} "
            f"(tolerance {tolerance:.3f}); kept as candidate.",
        )
    margin = config["TIE_MARGIN"]
    if new > old + margin:
        return GateDecision(True, f"{metric} improved from {old:.3f} to {new:.3f} on the frozen test split.")
    if new < old - margin:
        return GateDecision(False, f"{metric} {new:.3f} does not beat the active model's {old:.3f}.")
    key = "covid_sensitivity_at_95_specificity"
    new_tb, old_tb = candidate.get(key), active.get(key)
    if new_tb is not None and (old_tb is None or new_tb > old_tb):
        return GateDecision(
            True,
            f"{metric} tied ({new:.3f} vs {old:.3f}); COVID sensitivity at 95% specificity "
            f"{_fmt(old_tb)} → {_fmt(new_tb)}.",
        )
    return GateDecision(
        False,
        f"{metric} tied ({new:.3f} vs {old:.3f}) and COVID sensitivity at 95% specificity "
        f"did not improve ({_fmt(old_tb)} → {_fmt(new_tb)}).",
    )


def model_version_register(
    *,
    name: str,
    artifact_path: Path,
    architecture: str,
    class_names: list[str],
    input_size: int,
    metrics: dict | None = None,
    hyperparameters: dict | None = None,
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


def model_version_load(*, version: ModelVersion) -> LoadedModel:
    """The version in the inference runtime, loaded once per process and version."""
    return load_model(
        version.artifact.path,
        key=f"{version.pk}:{version.name}",
        class_names=version.class_names,
        input_size=version.input_size,
        temperature=float(version.metrics.get("temperature", 1.0)),
    )


@transaction.atomic
def model_version_promote(*, model_version: ModelVersion, user: AbstractBaseUser | None, reason: str) -> ModelVersion:
    """Make a version the active one (promotion or roll-back); the only way the active model changes."""
    previous = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    if previous is not None and previous.pk == model_version.pk:
        return model_version
    if previous is not None:
        previous.is_active = False
        previous.status = ModelVersion.Status.RETIRED
        previous.save(update_fields=["is_active", "status"])
    model_version.is_active = True
    model_version.status = ModelVersion.Status.ACTIVE
    model_version.save(update_fields=["is_active", "status"])
    ModelActivation.objects.create(model_version=model_version, previous=previous, activated_by=user, reason=reason)
    return model_version
