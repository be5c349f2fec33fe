"""REST API for model versions, training runs and curated dataset snapshots."""

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.exceptions import RETRY_AFTER_SECONDS
from studies.audit import access_record, request_address
from studies.models import AccessEvent
from studies.permissions import CanExport, CanPromote, CanTrain, HasRole
from studies.selectors import prediction_agreement_by_source
from training.architectures import BACKBONES, ArchitectureError, weights_check
from training.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.selectors import model_version_get_active, model_version_list, snapshot_list, training_run_list
from training.services import model_version_promote, snapshot_export_zip, training_run_create

PLOT_NAMES = ("training_curves", "confusion_matrix", "roc", "reliability")


def _paginated(request: Request, view: APIView, queryset, serializer_class) -> Response:
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


class ModelVersionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    architecture = serializers.CharField()
    class_names = serializers.ListField(child=serializers.CharField())
    input_size = serializers.IntegerField()
    is_active = serializers.BooleanField()
    status = serializers.CharField()
    gate_decision = serializers.CharField()
    gate = serializers.JSONField(help_text="The gate's decision with its per-source table of paired differences.")
    decision_rule = serializers.JSONField(help_text="Temperature and per-class biases, global and per site.")
    metrics = serializers.JSONField()
    hyperparameters = serializers.JSONField()
    snapshot = serializers.IntegerField(source="snapshot_id", allow_null=True)
    model_card = serializers.CharField()
    created_at = serializers.DateTimeField()


class ModelVersionListApi(APIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses=ModelVersionOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return _paginated(request, self, model_version_list(), ModelVersionOutputSerializer)


class ModelVersionActiveApi(APIView):
    @extend_schema(responses=ModelVersionOutputSerializer)
    def get(self, request: Request) -> Response:
        version = model_version_get_active()
        if version is None:
            raise Http404("No model is active yet.")
        return Response(ModelVersionOutputSerializer(version).data)


class ModelAgreementOutputSerializer(serializers.Serializer):
    source = serializers.CharField()
    week = serializers.CharField(help_text="ISO week of the studies' first reviews, e.g. 2026-W47.")
    reviewed = serializers.IntegerField()
    agreed = serializers.IntegerField(help_text="Reviews that kept the model's answer.")
    agreement = serializers.FloatField()
    models = serializers.ListField(child=serializers.CharField(), help_text="Versions that answered.")


class ModelAgreementApi(APIView):
    """Model-reviewer agreement per source and week (first reviews of predicted studies, last 12 weeks)."""

    @extend_schema(responses=ModelAgreementOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        rows = [
            {"source": source, **week} for source, weeks in prediction_agreement_by_source().items() for week in weeks
        ]
        return Response(ModelAgreementOutputSerializer(rows, many=True).data)


class ModelVersionDetailApi(APIView):
    @extend_schema(responses=ModelVersionOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ModelVersionOutputSerializer(get_object_or_404(ModelVersion, pk=pk)).data)


class ModelVersionPromoteApi(APIView):
    """Make this version active by hand (promote a candidate or roll back): needs the permission
    ``training.promote_modelversion``. The promotion gate applies; ``override`` activates a version the
    gate refuses, with the written reason logged, and needs ``training.override_modelversion``."""

    permission_classes = [HasRole, CanPromote]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ModelPromoteInput"

        reason = serializers.CharField(max_length=2000, help_text="Why; kept in the activation log.")
        override = serializers.BooleanField(default=False, help_text="Activate even if the promotion gate refuses.")

    @extend_schema(request=InputSerializer, responses=ModelVersionOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data["override"] and not request.user.has_perm("training.override_modelversion"):
            raise PermissionDenied("You need the permission to override the promotion gate.")
        version = model_version_promote(
            model_version=get_object_or_404(ModelVersion, pk=pk),
            user=request.user,
            reason=serializer.validated_data["reason"],  # the activation log records who, and from where
            override=serializer.validated_data["override"],
            address=request_address(request),
        )
        return Response(ModelVersionOutputSerializer(version).data)


class TrainingRunOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    epoch = serializers.IntegerField()
    epochs = serializers.IntegerField()
    metrics = serializers.JSONField()
    history = serializers.JSONField()
    hyperparameters = serializers.JSONField()
    plots = serializers.SerializerMethodField()
    model_version = serializers.CharField(source="model_version.name", default=None, allow_null=True)
    model_version_id = serializers.IntegerField(allow_null=True)
    snapshot = serializers.IntegerField(source="snapshot_id", allow_null=True)
    trigger = serializers.CharField()
    error = serializers.CharField()
    log = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_plots(self, run: TrainingRun) -> list[str]:
        return sorted(run.plots)


class TrainingRunListCreateApi(APIView):
    """GET: training runs. POST (permission ``training.start_trainingrun``): start a run now; 202, it
    runs on the training queue."""

    pagination_class = PageNumberPagination

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TrainingRunInput"

        backbone = serializers.ChoiceField(choices=BACKBONES, required=False)
        weights = serializers.CharField(required=False, help_text="none, imagenet or a local weights path")
        epochs = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=500,
            help_text="Epochs of a run from scratch; a fine-tune (warm start) runs TRAINING_FINE_TUNE_EPOCHS.",
        )
        input_size = serializers.IntegerField(required=False, min_value=32, max_value=512)
        batch_size = serializers.IntegerField(required=False, min_value=1, max_value=256)
        learning_rate = serializers.FloatField(required=False, min_value=1e-6, max_value=1.0)
        warm_start = serializers.BooleanField(
            required=False,
            help_text="Fine-tune the active model (default when it is compatible) or start from scratch.",
        )

        def validate(self, attrs: dict) -> dict:
            backbone = attrs.get("backbone", settings.TRAINING["BACKBONE"])
            try:
                weights_check(backbone=backbone, weights=attrs.get("weights", settings.TRAINING["WEIGHTS"]))
            except ArchitectureError as exc:
                raise serializers.ValidationError({"weights": str(exc)}) from exc
            return attrs

    def get_permissions(self) -> list:
        return [HasRole(), CanTrain()] if self.request.method == "POST" else super().get_permissions()

    @extend_schema(responses=TrainingRunOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return _paginated(request, self, training_run_list(), TrainingRunOutputSerializer)

    @extend_schema(request=InputSerializer, responses={202: TrainingRunOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = training_run_create(user=request.user, trigger="api", hyperparameters=serializer.validated_data)
        if run.status == TrainingRun.Status.FAILED:  # the broker was unreachable: nothing will run it
            return Response(
                {"detail": run.error, "run": TrainingRunOutputSerializer(run).data},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunDetailApi(APIView):
    @extend_schema(responses=TrainingRunOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(TrainingRunOutputSerializer(get_object_or_404(training_run_list(), pk=pk)).data)


class TrainingRunPlotApi(APIView):
    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, pk: int, name: str) -> FileResponse:
        run = get_object_or_404(TrainingRun, pk=pk)
        if name not in run.plots:
            raise Http404(f"Run {pk} has no plot {name!r}.")
        return FileResponse(default_storage.open(run.plots[name], "rb"), content_type="image/png")


class DatasetSnapshotOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    content_hash = serializers.CharField()
    counts = serializers.JSONField(help_text="As frozen; cases withdrawn since are still counted here.")
    withdrawn = serializers.IntegerField(help_text="Cases withdrawn since (their studies erased): never exported.")
    created_at = serializers.DateTimeField()


class DatasetSnapshotListApi(APIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses=DatasetSnapshotOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return _paginated(request, self, snapshot_list(), DatasetSnapshotOutputSerializer)


class DatasetSnapshotDetailApi(APIView):
    @extend_schema(responses=DatasetSnapshotOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(DatasetSnapshotOutputSerializer(get_object_or_404(snapshot_list(), pk=pk)).data)


class DatasetSnapshotExportApi(APIView):
    """A zip of the snapshot's images and a labels.csv in the dev set's columns (permission
    ``training.export_datasetsnapshot``)."""

    permission_classes = [HasRole, CanExport]

    @extend_schema(responses={(200, "application/zip"): bytes})
    def get(self, request: Request, pk: int) -> HttpResponse:
        snapshot = get_object_or_404(DatasetSnapshot, pk=pk)
        access_record(
            user=request.user,
            action=AccessEvent.Action.EXPORT,
            detail=f"snapshot {snapshot.pk} ({snapshot.content_hash[:12]})",
            address=request_address(request),
        )
        return FileResponse(
            snapshot_export_zip(snapshot=snapshot),
            content_type="application/zip",
            as_attachment=True,
            filename=f"cxr-snapshot-{snapshot.pk}-{snapshot.content_hash[:8]}.zip",
        )
