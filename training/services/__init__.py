"""Services of the training app, one module per concern."""

from training.services.exports import snapshot_export_zip
from training.services.registry import (
    model_version_gate,
    model_version_load,
    model_version_promote,
    model_version_register,
)
from training.services.runs import training_run_create, training_run_execute
from training.services.schedule import retrain_due_reason, retrain_if_due
from training.services.snapshots import snapshot_create

__all__ = [
    "model_version_gate",
    "model_version_load",
    "model_version_promote",
    "model_version_register",
    "retrain_due_reason",
    "retrain_if_due",
    "snapshot_create",
    "snapshot_export_zip",
    "training_run_create",
    "training_run_execute",
]
