"""Reads for studies; access rules live here once."""

import django_filters
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Prefetch, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from studies.models import Label, Prediction, Review, Study


def user_is_reviewer(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.groups.filter(name="reviewer").exists()))


def user_can_upload(user: AbstractBaseUser) -> bool:
    return bool(
        user.is_authenticated and (user.is_staff or user.groups.filter(name__in=["uploader", "reviewer"]).exists())
    )


def study_annotate(queryset: QuerySet[Study]) -> QuerySet[Study]:
    latest_review = Review.objects.filter(study=OuterRef("pk")).order_by("-created_at", "-id")
    latest_prediction = Prediction.objects.filter(study=OuterRef("pk")).order_by("-created_at", "-id")
    return (
        queryset.select_related("patient", "uploaded_by")
        .annotate(
            final_label=Subquery(latest_review.values("label")[:1]),
            is_reviewed=Exists(latest_review),
            predicted_label=Subquery(latest_prediction.values("label")[:1]),
            predicted_confidence=Subquery(latest_prediction.values("confidence")[:1]),
        )
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


class StudyFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Study.Status.choices)
    reviewed = django_filters.BooleanFilter(field_name="is_reviewed")
    label = django_filters.ChoiceFilter(
        field_name="final_label", choices=Label.choices, help_text="The reviewed (final) label."
    )
    predicted_label = django_filters.ChoiceFilter(choices=Label.choices, help_text="The latest predicted label.")
    source = django_filters.CharFilter()

    class Meta:
        model = Study
        fields = ["status", "source"]


def study_list(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[Study]:
    filterset = StudyFilter(filters or {}, queryset=study_visible_queryset(user=user))
    if not filterset.is_valid():
        raise ValidationError({field: list(errors) for field, errors in filterset.errors.items()})
    return filterset.qs


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
