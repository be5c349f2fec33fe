"""Services of the training app, one module per concern."""

from training.services.exports import snapshot_export_zip
from training.services.registry import (
    GateDecision,
    model_version_load,
    model_version_promote,
    model_version_register,
    promotion_decision,
)
from training.services.runs import retrain_if_due, training_run_create, training_run_execute
from training.services.snapshots import snapshot_create

__all__ = [
    "GateDecision",
    "model_version_load",
    "model_version_promote",
    "model_version_register",
    "promotion_decision",
    "retrain_if_due",
    "snapshot_create",
    "snapshot_export_zip",
    "training_run_create",
    "training_run_execute",
]
