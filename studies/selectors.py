"""Reads for studies; access rules live here once."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Prefetch, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from studies.models import Prediction, Review, Study


def user_is_reviewer(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.groups.filter(name="reviewer").exists()))


def user_can_upload(user: AbstractBaseUser) -> bool:
    return bool(
        user.is_authenticated and (user.is_staff or user.groups.filter(name__in=["uploader", "reviewer"]).exists())
    )


def study_annotate_labels(queryset: QuerySet[Study]) -> QuerySet[Study]:
    """Add final_label (the latest review), is_reviewed, predicted_label and predicted_confidence."""
    latest_review = Review.objects.filter(study=OuterRef("pk")).order_by("-created_at", "-id")
    latest_prediction = Prediction.objects.filter(study=OuterRef("pk")).order_by("-created_at", "-id")
    return queryset.annotate(
        final_label=Subquery(latest_review.values("label")[:1]),
        is_reviewed=Exists(latest_review),
        predicted_label=Subquery(latest_prediction.values("label")[:1]),
        predicted_confidence=Subquery(latest_prediction.values("confidence")[:1]),
    )


def study_annotate(queryset: QuerySet[Study]) -> QuerySet[Study]:
    """The labels plus everything a study's page or JSON shows, fetched up front."""
    return (
        study_annotate_labels(queryset)
        .select_related("patient", "uploaded_by")
        .prefetch_related(
            Prefetch("predictions", queryset=Prediction.objects.select_related("model_version")),
            Prefetch("reviews", queryset=Review.objects.select_related("reviewer")),
        )
    )


def study_visible_queryset(*, user: AbstractBaseUser) -> QuerySet[Study]:
    """Reviewers and staff see every study; uploaders see the studies they uploaded."""
    queryset = Study.objects.all()
    if not user_is_reviewer(user):
        queryset = queryset.filter(uploaded_by=user)
    return study_annotate(queryset)


# Validated filter values (StudyListCreateApi.FilterSerializer) → the lookups they stand for.
STUDY_FILTER_LOOKUPS = {
    "status": "status",
    "reviewed": "is_reviewed",
    "label": "final_label",
    "predicted_label": "predicted_label",
    "source": "source",
}


def study_list(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[Study]:
    """The studies a user may see, narrowed by validated filters; a None value means any."""
    lookups = {STUDY_FILTER_LOOKUPS[key]: value for key, value in (filters or {}).items() if value is not None}
    return study_visible_queryset(user=user).filter(**lookups)


def study_get_for_user(*, user: AbstractBaseUser, study_id: int) -> Study:
    return get_object_or_404(study_visible_queryset(user=user), pk=study_id)


def review_queue_list(*, user: AbstractBaseUser) -> QuerySet[Study]:
    """Predicted, unreviewed studies, least confident first: where a reviewer helps most."""
    return (
        study_visible_queryset(user=user)
        .filter(status=Study.Status.PREDICTED, is_reviewed=False)
        .order_by("predicted_confidence", "uploaded_at")
    )


def study_latest_prediction(study: Study) -> Prediction | None:
    predictions = list(study.predictions.all())
    return max(predictions, key=lambda p: (p.created_at, p.id)) if predictions else None
