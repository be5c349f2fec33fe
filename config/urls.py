from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.apis import AuthTokenCreateApi
from config.health import healthz, readyz
from studies import apis as study_apis
from training import apis as training_apis


def not_found(request, exception=None):
    """API clients get a 404 in DRF's shape even for paths no route matches (e.g. /api/studies/-1/)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = not_found


api_patterns = [
    path("auth/token/", AuthTokenCreateApi.as_view(), name="auth-token"),
    path("studies/", study_apis.StudyListCreateApi.as_view(), name="study-list"),
    path("studies/<int:pk>/", study_apis.StudyDetailDeleteApi.as_view(), name="study-detail"),
    path("studies/<int:pk>/image/", study_apis.StudyImageApi.as_view(), name="study-image"),
    path("studies/<int:pk>/heatmap/", study_apis.StudyHeatmapApi.as_view(), name="study-heatmap"),
    path("studies/<int:pk>/reviews/", study_apis.ReviewCreateApi.as_view(), name="study-review-create"),
    path("studies/<int:pk>/reject/", study_apis.StudyRejectApi.as_view(), name="study-reject"),
    path("studies/<int:pk>/send-back/", study_apis.StudySendBackApi.as_view(), name="study-send-back"),
    path("studies/<int:pk>/assign/", study_apis.StudyAssignApi.as_view(), name="study-assign"),
    path("studies/<int:pk>/adjudicate/", study_apis.StudyAdjudicateApi.as_view(), name="study-adjudicate"),
    path("review-queue/", study_apis.ReviewQueueApi.as_view(), name="review-queue"),
    path("stats/", study_apis.StatsApi.as_view(), name="stats"),
    path("adjudication-queue/", study_apis.AdjudicationQueueApi.as_view(), name="adjudication-queue"),
    path("audit-events/", study_apis.AccessEventListApi.as_view(), name="audit-event-list"),
    path("audit-events/export/", study_apis.AccessEventExportApi.as_view(), name="audit-event-export"),
    path("models/", training_apis.ModelVersionListApi.as_view(), name="model-list"),
    path("models/active/", training_apis.ModelVersionActiveApi.as_view(), name="model-active"),
    path("models/agreement/", training_apis.ModelAgreementApi.as_view(), name="model-agreement"),
    path("models/<int:pk>/", training_apis.ModelVersionDetailApi.as_view(), name="model-detail"),
    path("models/<int:pk>/promote/", training_apis.ModelVersionPromoteApi.as_view(), name="model-promote"),
    path("training-runs/", training_apis.TrainingRunListCreateApi.as_view(), name="training-run-list"),
    path("training-runs/<int:pk>/", training_apis.TrainingRunDetailApi.as_view(), name="training-run-detail"),
    path(
        "training-runs/<int:pk>/plots/<str:name>/", training_apis.TrainingRunPlotApi.as_view(), name="training-run-plot"
    ),
    path("datasets/", training_apis.DatasetSnapshotListApi.as_view(), name="dataset-list"),
    path("datasets/<int:pk>/", training_apis.DatasetSnapshotDetailApi.as_view(), name="dataset-detail"),
    path("datasets/<int:pk>/export/", training_apis.DatasetSnapshotExportApi.as_view(), name="dataset-export"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz/", healthz, name="healthz"),
    path("readyz/", readyz, name="readyz"),
    path("", include("training.urls")),
    path("", include("studies.urls")),
]
