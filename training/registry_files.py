"""A model version on disk: model.keras + metadata.json + MODEL_CARD.md (the starter model's format)."""

import json
import shutil
from pathlib import Path

from training.models import ModelVersion
from training.services import model_version_register

METADATA_KEYS = ("name", "architecture", "class_names", "input_size", "metrics", "hyperparameters", "decision_rule")


def model_version_export(*, version: ModelVersion, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with version.artifact.open("rb") as source, (directory / "model.keras").open("wb") as target:
        shutil.copyfileobj(source, target)
    metadata = {key: getattr(version, key) for key in METADATA_KEYS}
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    (directory / "MODEL_CARD.md").write_text(version.model_card)
    return directory


def model_version_import(*, directory: Path) -> ModelVersion:
    metadata = json.loads((directory / "metadata.json").read_text())
    card = directory / "MODEL_CARD.md"
    return model_version_register(
        name=metadata["name"],
        artifact_path=directory / "model.keras",
        architecture=metadata["architecture"],
        class_names=metadata["class_names"],
        input_size=metadata["input_size"],
        metrics=metadata.get("metrics", {}),
        hyperparameters=metadata.get("hyperparameters", {}),
        decision_rule=metadata.get("decision_rule", {}),
        model_card=card.read_text() if card.exists() else "",
    )
