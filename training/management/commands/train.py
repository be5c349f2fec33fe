"""Train a model on the curated (reviewed) studies, evaluate it, gate and register it.

Runs the same service as the Celery task, in this process, with a progress bar.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from training.architectures import BACKBONES
from training.models import TrainingRun
from training.services import training_run_create, training_run_execute


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


class Command(BaseCommand):
    help = "Train, evaluate on the frozen test split, and promote if the gate allows."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--backbone", choices=BACKBONES)
        parser.add_argument("--weights", help="none, imagenet (needs network) or a local weights file")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--input-size", type=int)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--learning-rate", type=float)
        parser.add_argument(
            "--from-scratch",
            action="store_true",
            help="random initialisation instead of fine-tuning the active model (the default when compatible)",
        )

    def handle(self, *args, **options) -> None:
        keys = ("backbone", "weights", "epochs", "input_size", "batch_size", "learning_rate")
        overrides = {k: options[k] for k in keys if options.get(k) is not None}
        if options["from_scratch"]:
            overrides["warm_start"] = False
        try:
            run = training_run_create(user=None, trigger="command", hyperparameters=overrides, dispatch=False)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        bar = tqdm(desc=f"Training run {run.pk}", unit="epoch", disable=options["verbosity"] < 1)

        def on_epoch_end(epoch: int, epochs: int, logs: dict[str, float]) -> None:
            bar.total = epochs
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "val_loss", "val_accuracy")})
            bar.update(epoch - bar.n)

        run = training_run_execute(run_id=run.pk, listener=on_epoch_end)
        bar.close()
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Training run {run.pk} failed: {run.error}")
        version = run.model_version
        metrics = run.metrics
        version.refresh_from_db()
        self.stdout.write(f"Registered {version.name}: {version.status}. {version.gate_decision}")
        self.stdout.write(
            f"Test split: n={metrics.get('n')}, accuracy {_fmt(metrics.get('accuracy'))}, "
            f"macro AUC {_fmt(metrics.get('macro_auc'))}"
        )
        for source, result in (metrics.get("per_source") or {}).items():
            self.stdout.write(
                f"  {source}: n={result.get('n')}, accuracy {_fmt(result.get('accuracy'))}, "
                f"macro AUC {_fmt(result.get('macro_auc'))}"
            )
        shortcut = metrics.get("shortcut") or {}
        for reason in shortcut.get("reasons", []):
            self.stdout.write(self.style.WARNING(f"Shortcut warning: {reason}"))
