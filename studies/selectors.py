"""Reads for studies; access rules live here once."""

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, Min, OuterRef, Prefetch, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone

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


# A prediction shows its model version's name: its metrics, card and gate (large JSON and text,
# decoded for every row) are left in the database unless a page asks for them.
_HEAVY = [
    f"model_version__{name}"
    for name in ("metrics", "hyperparameters", "model_card", "gate", "gate_decision", "decision_rule")
]


def study_annotate(queryset: QuerySet[Study]) -> QuerySet[Study]:
    """The labels plus everything a study's page or JSON shows, fetched up front."""
    return (
        study_annotate_labels(queryset)
        .select_related("patient", "uploaded_by")
        .prefetch_related(
            Prefetch("predictions", queryset=Prediction.objects.select_related("model_version").defer(*_HEAVY)),
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


def study_list_ids(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet:
    """The ids of study_list, in its order: page over these, then fetch the page with study_page.
    Only the annotations a filter needs are computed, and only for the rows it looks at; paging the
    annotated list computed every label of every row skipped before a deep page."""
    return study_list(user=user, filters=filters).values_list("pk", flat=True)


def study_page(*, ids: list[int]) -> list[Study]:
    """Studies by id, annotated as study_annotate does, in the order of ``ids``."""
    by_id = {study.pk: study for study in study_annotate(Study.objects.filter(pk__in=ids))}
    return [by_id[pk] for pk in ids if pk in by_id]


def study_as_created(study: Study) -> Study:
    """A study just stored, shaped as study_annotate would shape it, without another query: it has
    no prediction and no review yet. An upload's answer then needs nothing more from the database,
    so a database lost after the commit cannot turn a stored study into an error (and a retry)."""
    study.final_label = None
    study.is_reviewed = False
    study.predicted_label = None
    study.predicted_confidence = None
    study._prefetched_objects_cache = {"predictions": Prediction.objects.none(), "reviews": Review.objects.none()}
    return study


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


def _first_reviews(*, after_review_id: int = 0, since: datetime | None = None) -> list[Review]:
    """Each study's first review (a re-review never counts twice), newest first."""
    first_ids = Review.objects.values("study").annotate(first=Min("id")).values("first")
    reviews = Review.objects.filter(id__in=Subquery(first_ids), id__gt=after_review_id)
    if since is not None:
        reviews = reviews.filter(created_at__gte=since)
    return list(reviews.select_related("study").order_by("-id"))


def _answer_at_review(reviews: list[Review]) -> dict[int, Prediction]:
    """The prediction each review saw: the study's latest prediction made before the review."""
    predictions: dict[int, list[Prediction]] = {}
    for prediction in Prediction.objects.filter(study_id__in=[r.study_id for r in reviews]).select_related(
        "model_version"
    ):
        predictions.setdefault(prediction.study_id, []).append(prediction)
    answers = {}
    for review in reviews:
        before = [p for p in predictions.get(review.study_id, []) if p.created_at <= review.created_at]
        if before:
            answers[review.pk] = max(before, key=lambda p: (p.created_at, p.id))
    return answers


def studies_newly_reviewed_count(*, after_review_id: int) -> int:
    """Distinct studies whose first review came after ``after_review_id``."""
    return Review.objects.values("study").annotate(first=Min("id")).filter(first__gt=after_review_id).count()


def review_corrections_by_source(*, after_review_id: int, last: int) -> dict[str, tuple[int, int]]:
    """Per source: (corrected, reviewed) over the latest ``last`` first reviews of predicted studies."""
    reviews = _first_reviews(after_review_id=after_review_id)
    answers = _answer_at_review(reviews)
    result: dict[str, tuple[int, int]] = {}
    for review in reviews:
        prediction = answers.get(review.pk)
        source = review.study.source or "unknown"
        if prediction is None or result.get(source, (0, 0))[1] >= last:
            continue
        corrected, reviewed = result.get(source, (0, 0))
        result[source] = (corrected + (prediction.label != review.label), reviewed + 1)
    return result


def prediction_agreement_by_source(*, weeks: int = 12) -> dict[str, list[dict]]:
    """Per source and ISO week of the first review: how often reviewers kept the model's answer."""
    since = timezone.now() - timedelta(weeks=weeks)
    reviews = _first_reviews(since=since)
    answers = _answer_at_review(reviews)
    cells: dict[tuple[str, str], dict] = {}
    for review in reviews:
        prediction = answers.get(review.pk)
        if prediction is None:
            continue
        year, week, _ = review.created_at.isocalendar()
        cell = cells.setdefault(
            (review.study.source or "unknown", f"{year}-W{week:02d}"), {"reviewed": 0, "agreed": 0, "models": set()}
        )
        cell["reviewed"] += 1
        cell["agreed"] += prediction.label == review.label
        cell["models"].add(prediction.model_version.name)
    result: dict[str, list[dict]] = {}
    for (source, week), cell in sorted(cells.items()):
        result.setdefault(source, []).append(
            {
                "week": week,
                "reviewed": cell["reviewed"],
                "agreed": cell["agreed"],
                "agreement": cell["agreed"] / cell["reviewed"],
                "models": sorted(cell["models"]),
            }
        )
    return result
