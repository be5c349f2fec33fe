"""Server-rendered pages for studies. Writes go through services; the browser's live parts use the API."""

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.exceptions import ValidationError as DRFValidationError

from studies.apis import AccessEventListApi, ReviewCreateApi, ReviewQueueApi, StudyListCreateApi
from studies.audit import request_address
from studies.models import AccessEvent, Label, RejectReason, Study
from studies.permissions import IsSiteLead
from studies.selectors import (
    QUEUE_ORDERS,
    access_event_list,
    adjudication_queue_list,
    review_queue_list,
    review_queue_sources,
    study_blinding,
    study_get_for_user,
    study_latest_prediction,
    study_list,
    study_reads,
    study_reads_required,
    user_can_upload,
    user_is_adjudicator,
    user_is_reviewer,
)
from studies.services import (
    review_adjudicate,
    review_submit,
    study_assign,
    study_reject,
    study_requeue,
    study_send_back,
)
from studies.sites import role_required, site_list_for_upload, user_is_site_lead

PAGE_SIZE = 25
AUDIT_PAGE_SIZE = 50
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
    role_required(request.user)
    filters = {key: request.GET[key] for key in LIST_FILTERS if request.GET.get(key)}
    validated = StudyListCreateApi.FilterSerializer(data=filters)
    if not validated.is_valid():
        for field, errors in validated.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        filters = {}
    studies = study_list(user=request.user, filters=validated.validated_data)  # empty when invalid
    page = Paginator(studies, PAGE_SIZE).get_page(request.GET.get("page"))
    for study in page.object_list:  # a reader who has not read a blinded source's study sees no model answer
        study.model_hidden = study_blinding(user=request.user, study=study)[1]
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
    hide_reads, hide_model = study_blinding(user=request.user, study=study)
    prediction = None if hide_model else study_latest_prediction(study)
    probabilities = prediction.probabilities if prediction else {}
    next_in_queue = None
    if user_is_reviewer(request.user):
        next_in_queue = review_queue_list(user=request.user).exclude(pk=study.pk).values_list("pk", flat=True).first()
    context = {
        "hide_reads": hide_reads,
        "hide_model": hide_model,
        "reads": [] if hide_reads else study_reads(study),
        "reads_required": study_reads_required(study=study),
        "is_adjudicator": user_is_adjudicator(request.user),
        "reject_reasons": RejectReason.choices,
        "study": study,
        "prediction": prediction,
        "earlier_predictions": [p for p in study.predictions.all() if prediction and p.pk != prediction.pk],
        "confidence_percent": 100 * prediction.confidence if prediction else None,
        "probabilities": [(value, name, 100 * probabilities.get(value, 0.0)) for value, name in Label.choices],
        "labels": Label.choices,
        "label_names": dict(Label.choices),
        "reviews": [] if hide_reads else study.reviews.all(),
        "is_live": study.status in (Study.Status.QUEUED, Study.Status.PROCESSING),
        "next_in_queue": next_in_queue,
    }
    return render(request, "studies/study_detail.html", context)


def _reading_ms(value: str) -> int | None:
    """The reading time the study page's script puts in the review form, checked as the review API checks it;
    none (no script, or a value out of range) is no time."""
    if not value:
        return None
    try:
        return ReviewCreateApi.InputSerializer().fields["reading_ms"].run_validation(value)
    except DRFValidationError:
        return None


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
            reading_ms=_reading_ms(request.POST.get("reading_ms", "")),
            address=request_address(request),
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
    return _form_action(
        request,
        pk,
        lambda study: study_requeue(study=study, user=request.user),
        f"Study {pk} was sent for prediction again.",
    )


def _queue_filters(request: HttpRequest) -> dict:
    """The queue's filters from the query string, validated like the queue API's."""
    keys = ("source", "predicted_label", "uploaded_from", "uploaded_to", "mine", "order")
    data = {key: request.GET[key] for key in keys if request.GET.get(key)}
    validated = ReviewQueueApi.FilterSerializer(data=data)
    if not validated.is_valid():
        for field, errors in validated.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return {}
    filters = dict(validated.validated_data)
    filters.pop("limit", None)
    filters.pop("exclude", None)
    return filters


@login_required
def review_queue_view(request: HttpRequest) -> HttpResponse:
    _require_reviewer(request.user)
    filters = _queue_filters(request)
    page = Paginator(review_queue_list(user=request.user, **filters), PAGE_SIZE).get_page(request.GET.get("page"))
    for study in page.object_list:  # nobody in this queue has read these yet
        study.model_hidden = study_blinding(user=request.user, study=study)[1]
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": _add_label_names(page),
        "filters": filters,
        "query": query.urlencode(),
        "labels": Label.choices,
        "orders": [(key, key.capitalize()) for key in QUEUE_ORDERS],
        "sources": review_queue_sources(user=request.user),
    }
    return render(request, "studies/review_queue.html", context)


@login_required
def review_read_view(request: HttpRequest) -> HttpResponse:
    """Keyboard reading: the page fetches studies from the queue API and never reloads."""
    _require_reviewer(request.user)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "query": query.urlencode(),
        "label_names": dict(Label.choices),
        "reject_reasons": RejectReason.choices,
    }
    return render(request, "studies/review_read.html", context)


@login_required
def adjudication_queue_view(request: HttpRequest) -> HttpResponse:
    if not user_is_adjudicator(request.user):
        raise PermissionDenied("Only adjudicators can see this queue.")
    page = Paginator(adjudication_queue_list(user=request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    for study in page.object_list:
        study.current_reads = study_reads(study)
    return render(request, "studies/adjudication_queue.html", {"page": _add_label_names(page), "query": ""})


def _form_action(request: HttpRequest, pk: int, action: Callable[[Study], object], success: str) -> HttpResponse:
    """Run one service from a study page's form; its ValidationError or refusal (PermissionDenied: not a reader
    of this site, the reader's own upload) becomes an error message on the study page."""
    study = study_get_for_user(user=request.user, study_id=pk)
    try:
        action(study)
    except ValidationError as error:
        _error_messages(request, error)
    except PermissionDenied as refusal:
        messages.error(request, str(refusal) or "You may not do that to this study.")
    else:
        messages.success(request, success)
    return redirect("studies:detail", pk=pk)


@login_required
@require_POST
def study_reject_view(request: HttpRequest, pk: int) -> HttpResponse:
    _require_reviewer(request.user)
    reason, comment = request.POST.get("reason", ""), request.POST.get("comment", "")
    return _form_action(
        request,
        pk,
        lambda study: study_reject(
            study=study, reviewer=request.user, reason=reason, comment=comment, address=request_address(request)
        ),
        f"Study {pk} rejected: it will not enter any dataset.",
    )


@login_required
@require_POST
def study_send_back_view(request: HttpRequest, pk: int) -> HttpResponse:
    _require_reviewer(request.user)
    return _form_action(
        request,
        pk,
        lambda study: study_send_back(study=study, user=request.user, address=request_address(request)),
        f"Study {pk} sent back for reading.",
    )


@login_required
@require_POST
def study_adjudicate_view(request: HttpRequest, pk: int) -> HttpResponse:
    label, reason = request.POST.get("label", ""), request.POST.get("reason", "")
    return _form_action(
        request,
        pk,
        lambda study: review_adjudicate(
            study=study, adjudicator=request.user, label=label, reason=reason, address=request_address(request)
        ),
        f"Study {pk} adjudicated.",
    )


@login_required
@require_POST
def study_assign_view(request: HttpRequest, pk: int) -> HttpResponse:
    if not user_is_adjudicator(request.user):
        raise PermissionDenied("Only adjudicators or staff assign studies.")
    username = request.POST.get("reviewer", "").strip()
    return _form_action(
        request,
        pk,
        lambda study: study_assign(study=study, user=request.user, reviewer_username=username or None),
        f"Study {pk} assigned to {username}." if username else f"Study {pk} is in every reviewer's queue.",
    )


@login_required
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Charts drawn by app.js from GET /api/stats/ (which, like this page, needs a role)."""
    role_required(request.user)
    return render(request, "studies/dashboard.html")


@login_required
def audit_trail_view(request: HttpRequest) -> HttpResponse:
    """The audit trail of the sites the user leads (superusers: all of it), filtered like the API, with its CSV."""
    if not user_is_site_lead(request.user):
        raise PermissionDenied(IsSiteLead.message)
    keys = ("action", "date_from", "date_to", "study")
    validated = AccessEventListApi.FilterSerializer(
        data={key: request.GET[key] for key in keys if request.GET.get(key)}
    )
    if not validated.is_valid():
        for field, errors in validated.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
    filters = validated.validated_data  # empty when invalid
    events = access_event_list(user=request.user, **filters)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "filters": filters,
        "query": query.urlencode(),
        "actions": AccessEvent.Action.choices,
        "items": "events",
    }
    return render(request, "studies/audit_trail.html", context)
