import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from studies.admin import ViewOnlyAdmin
from studies.audit import request_address
from training.models import DatasetSnapshot, ModelActivation, ModelVersion, TrainingRun
from training.services import model_version_promote, training_run_create
from training.views import model_card_html

PRE = '<pre style="white-space:pre-wrap;max-height:30rem;overflow:auto">{}</pre>'


def _pretty_json(value: object) -> SafeString:
    return format_html(PRE, json.dumps(value, indent=2))


@admin.action(description="Activate (promote/roll back)", permissions=["promote"])
def activate(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
    if queryset.count() != 1:
        modeladmin.message_user(request, "Select exactly one model version to activate.", level=messages.ERROR)
        return
    version = queryset.get()
    try:
        model_version_promote(
            model_version=version,
            user=request.user,
            reason=f"admin action by {request.user.get_username()}",
            address=request_address(request),
        )
    except ValidationError as error:
        modeladmin.message_user(request, " ".join(error.messages), level=messages.ERROR)
        return
    modeladmin.message_user(request, f"{version} is now the active model.")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "is_active", "macro_auc", "architecture", "created_at"]
    list_filter = ["status", "architecture"]
    search_fields = ["name"]
    actions = [activate]

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.promote_modelversion")

    fields = [
        "name",
        "status",
        "is_active",
        "architecture",
        "class_names",
        "input_size",
        "snapshot",
        "artifact",
        "created_at",
        "gate_decision",
        "card",
        "metrics_pretty",
        "hyperparameters_pretty",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are registered by training runs

    @admin.display(description="macro AUC")
    def macro_auc(self, version: ModelVersion) -> str:
        value = version.metrics.get("macro_auc")
        return f"{value:.3f}" if value is not None else "—"

    @admin.display(description="model card")
    def card(self, version: ModelVersion) -> SafeString:
        return format_html('<div class="model-card">{}</div>', model_card_html(version.model_card))

    @admin.display(description="metrics")
    def metrics_pretty(self, version: ModelVersion) -> SafeString:
        return _pretty_json(version.metrics)

    @admin.display(description="hyperparameters")
    def hyperparameters_pretty(self, version: ModelVersion) -> SafeString:
        return _pretty_json(version.hyperparameters)


@admin.register(ModelActivation)
class ModelActivationAdmin(ViewOnlyAdmin):
    list_display = ["created_at", "model_version", "previous", "activated_by", "reason"]
    list_select_related = ["model_version", "previous", "activated_by"]

    def has_delete_permission(self, request: HttpRequest, obj: ModelActivation | None = None) -> bool:
        return False  # the audit trail of the active model


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ViewOnlyAdmin):
    list_display = ["id", "short_hash", "item_count", "withdrawn", "created_at", "created_by"]
    fields = ["content_hash", "item_count", "withdrawn", "counts_pretty", "last_review_id", "created_by", "created_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[DatasetSnapshot]:
        withdrawn = Count("items", filter=Q(items__withdrawn_at__isnull=False))
        return (
            super()
            .get_queryset(request)
            .annotate(item_count=Count("items"), withdrawn=withdrawn)
            .select_related("created_by")
        )

    @admin.display(description="content hash", ordering="content_hash")
    def short_hash(self, snapshot: DatasetSnapshot) -> str:
        return snapshot.content_hash[:12]

    @admin.display(description="items", ordering="item_count")
    def item_count(self, snapshot: DatasetSnapshot) -> int:
        return snapshot.item_count

    @admin.display(description="withdrawn", ordering="withdrawn")
    def withdrawn(self, snapshot: DatasetSnapshot) -> int:
        """Cases whose study was erased since: tombstones, never exported."""
        return snapshot.withdrawn

    @admin.display(description="counts")
    def counts_pretty(self, snapshot: DatasetSnapshot) -> SafeString:
        return _pretty_json(snapshot.counts)


@admin.register(TrainingRun)
class TrainingRunAdmin(ViewOnlyAdmin):
    change_list_template = "admin/training/trainingrun/change_list.html"
    list_display = ["id", "status", "progress_bar", "epoch_of", "model_version", "trigger", "created_at"]
    list_filter = ["status", "trigger"]
    list_select_related = ["model_version"]
    fields = [
        "status",
        "progress_bar",
        "epoch_of",
        "trigger",
        "triggered_by",
        "snapshot",
        "model_version",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "error",
        "plot_images",
        "metrics_pretty",
        "hyperparameters_pretty",
        "log_text",
    ]
    readonly_fields = fields

    def get_urls(self) -> list[URLPattern]:
        train_now = self.admin_site.admin_view(require_POST(self.train_now_view))
        return [path("train-now/", train_now, name="training_trainingrun_train_now"), *super().get_urls()]

    def train_now_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("training.start_trainingrun"):
            raise PermissionDenied("You need the permission to start training runs.")
        try:
            run = training_run_create(user=request.user, trigger="admin")
        except ValidationError as error:
            for text in error.messages:
                self.message_user(request, text, level=messages.ERROR)
        else:
            self.message_user(request, f"Training run {run.pk} queued.")
        return HttpResponseRedirect(reverse("admin:training_trainingrun_changelist"))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "train_now_url": reverse("admin:training_trainingrun_train_now")}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, run: TrainingRun) -> SafeString:
        return format_html('<progress max="1" value="{}"></progress> {}%', run.progress, round(100 * run.progress))

    @admin.display(description="epoch")
    def epoch_of(self, run: TrainingRun) -> str:
        return f"{run.epoch} / {run.epochs}"

    @admin.display(description="plots")
    def plot_images(self, run: TrainingRun) -> SafeString:
        return format_html_join(
            "",
            '<figure style="display:inline-block;margin:0 1rem 1rem 0"><img src="{}" alt="{}" width="360">'
            "<figcaption>{}</figcaption></figure>",
            ((reverse("api:training-run-plot", kwargs={"pk": run.pk, "name": name}), name, name) for name in run.plots),
        )

    @admin.display(description="metrics")
    def metrics_pretty(self, run: TrainingRun) -> SafeString:
        return _pretty_json(run.metrics)

    @admin.display(description="hyperparameters")
    def hyperparameters_pretty(self, run: TrainingRun) -> SafeString:
        return _pretty_json(run.hyperparameters)

    @admin.display(description="log")
    def log_text(self, run: TrainingRun) -> SafeString:
        return format_html(PRE, run.log)
