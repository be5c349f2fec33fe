"""Server-rendered pages for studies. Writes go through services; the browser's live parts use the API."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from studies.apis import StudyListCreateApi
from studies.models import Label, Study
from studies.selectors import (
    review_queue_list,
    study_get_for_user,
    study_latest_prediction,
    study_list,
    user_can_upload,
    user_is_reviewer,
)
from studies.services import review_submit, study_requeue
from studies.sites import site_list_for_upload, user_has_role

PAGE_SIZE = 25
LIST_FILTERS = ("status", "reviewed", "label")
VIEWS = ["PA", "AP", "AP Supine", "Lateral", "Other"]


def _require_reviewer(user: AbstractBaseUser) -> None:
    if not user_is_reviewer(user):
        raise PermissionDenied("Only reviewers can do this.")


def _add_label_names(page: Page) -> Page:
    """Display names for the annotated label values, which have no get_FOO_display()."""
    names = dict(Label.choices)
    for study in page.object_list:
        study.predicted_label_name = names.get(study.predicted_label, "")
        study.final_label_name = names.get(study.final_label, "")
    return page


def _error_messages(request: HttpRequest, error: ValidationError) -> None:
    for text in error.messages:
        messages.error(request, text)


@login_required
def study_list_view(request: HttpRequest) -> HttpResponse:
    if not user_has_role(request.user):
        raise PermissionDenied("Your account has no role: an administrator must add you to a site.")
    filters = {key: request.GET[key] for key in LIST_FILTERS if request.GET.get(key)}
    validated = StudyListCreateApi.FilterSerializer(data=filters)
    if not validated.is_valid():
        for field, errors in validated.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        filters = {}
    studies = study_list(user=request.user, filters=validated.validated_data)  # empty when invalid
    page = Paginator(studies, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": _add_label_names(page),
        "filters": filters,
        "query": query.urlencode(),
        "statuses": Study.Status.choices,
        "labels": Label.choices,
    }
    return render(request, "studies/study_list.html", context)


@login_required
def study_upload_view(request: HttpRequest) -> HttpResponse:
    if not user_can_upload(request.user):
        raise PermissionDenied("Your account cannot upload studies.")
    return render(request, "studies/upload.html", {"views": VIEWS, "sites": site_list_for_upload(user=request.user)})


@login_required
def study_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    study = study_get_for_user(user=request.user, study_id=pk)
    prediction = study_latest_prediction(study)
    probabilities = prediction.probabilities if prediction else {}
    next_in_queue = None
    if user_is_reviewer(request.user):
        next_in_queue = review_queue_list(user=request.user).exclude(pk=study.pk).values_list("pk", flat=True).first()
    context = {
        "study": study,
        "prediction": prediction,
        "earlier_predictions": [p for p in study.predictions.all() if prediction and p.pk != prediction.pk],
        "confidence_percent": 100 * prediction.confidence if prediction else None,
        "probabilities": [(value, name, 100 * probabilities.get(value, 0.0)) for value, name in Label.choices],
        "labels": Label.choices,
        "label_names": dict(Label.choices),
        "reviews": study.reviews.all(),
        "is_live": study.status in (Study.Status.QUEUED, Study.Status.PROCESSING),
        "next_in_queue": next_in_queue,
    }
    return render(request, "studies/study_detail.html", context)


@login_required
@require_POST
def study_review_view(request: HttpRequest, pk: int) -> HttpResponse:
    _require_reviewer(request.user)
    study = study_get_for_user(user=request.user, study_id=pk)
    try:
        review = review_submit(
            study=study,
            reviewer=request.user,
            label=request.POST.get("label", ""),
            comment=request.POST.get("comment", ""),
        )
    except ValidationError as error:
        _error_messages(request, error)
        return redirect("studies:detail", pk=study.pk)
    messages.success(request, f"Study {study.pk} labelled {review.get_label_display()}.")
    return redirect("studies:detail", pk=study.pk)


@login_required
@require_POST
def study_requeue_view(request: HttpRequest, pk: int) -> HttpResponse:
    _require_reviewer(request.user)
    study = study_get_for_user(user=request.user, study_id=pk)
    try:
        study_requeue(study=study)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Study {study.pk} was sent for prediction again.")
    return redirect("studies:detail", pk=study.pk)


@login_required
def review_queue_view(request: HttpRequest) -> HttpResponse:
    _require_reviewer(request.user)
    page = Paginator(review_queue_list(user=request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "studies/review_queue.html", {"page": _add_label_names(page)})
