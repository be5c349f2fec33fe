"""Server-rendered pages for model versions and training runs; writes go through training services."""

from typing import Any

import markdown
import nh3
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from studies.audit import request_address
from studies.selectors import prediction_agreement_by_source
from studies.sites import role_required
from training.models import ModelVersion, TrainingRun
from training.selectors import model_version_list, training_run_list
from training.services import model_version_promote, training_run_create

RECENT_RUNS = 20
HEADLINE_METRICS = {
    "accuracy": "Accuracy",
    "macro_auc": "Macro AUC",
    "covid_sensitivity_at_95_specificity": "COVID sensitivity at 95% specificity",
}
PER_CLASS_METRICS = ("support", "sensitivity", "specificity", "ppv", "npv", "auc")


CARD_TAGS = {
    *("h1", "h2", "h3", "h4", "p", "ul", "ol", "li", "blockquote", "code", "pre", "em", "strong", "a", "hr", "br"),
    *("table", "thead", "tbody", "tr", "th", "td"),
}


def model_card_html(text: str) -> SafeString:
    """The model card as HTML: Markdown tables and code blocks, any raw HTML in it escaped, and the result
    through an allow-list sanitiser (nh3): known tags only, links only to http(s) (or relative) URLs."""
    renderer = markdown.Markdown(extensions=["tables", "fenced_code"])
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    html = nh3.clean(
        renderer.convert(text),
        tags=CARD_TAGS,
        attributes={"a": {"href", "title"}, "th": {"align"}, "td": {"align"}, "code": {"class"}},
        url_schemes={"http", "https"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(html)


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers with their 95% intervals, per-class rows, calibration and the shortcut warning."""
    intervals = metrics.get("ci") or {}
    headline = [
        {"name": name, "value": metrics[key], "ci": intervals.get(key)}
        for key, name in HEADLINE_METRICS.items()
        if metrics.get(key) is not None
    ]
    per_class = [
        {"name": name, "values": [(values or {}).get(key) for key in PER_CLASS_METRICS]}
        for name, values in (metrics.get("per_class") or {}).items()
    ]
    other = {
        key: value
        for key, value in metrics.items()
        if key not in HEADLINE_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
    }
    return {
        "headline": headline,
        "per_class": per_class,
        "per_class_columns": PER_CLASS_METRICS,
        "other": other,
        "ece": (metrics.get("calibration") or {}).get("ece"),
        "shortcut": metrics.get("shortcut") or {},
    }


def _macro_auc(version: ModelVersion) -> ModelVersion:
    """Attach the macro AUC and its interval for the table."""
    version.macro_auc = version.metrics.get("macro_auc")
    version.macro_auc_ci = (version.metrics.get("ci") or {}).get("macro_auc")
    return version


def _require_perm(request: HttpRequest, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied("Your account lacks the permission to do this.")


@login_required
def model_list_view(request: HttpRequest) -> HttpResponse:
    role_required(request.user)
    context = {
        "versions": [_macro_auc(version) for version in model_version_list()],
        "agreement": prediction_agreement_by_source(),
        "correction_rate_percent": round(settings.RETRAIN_CORRECTION_RATE * 100),
        "correction_window": settings.RETRAIN_CORRECTION_WINDOW,
        "runs": training_run_list()[:RECENT_RUNS],
    }
    return render(request, "training/model_list.html", context)


@login_required
def model_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    role_required(request.user)
    version = _macro_auc(get_object_or_404(model_version_list(), pk=pk))
    context = {
        "version": version,
        "card": model_card_html(version.model_card),
        "summary": metrics_summary(version.metrics),
        "activations": version.activations.select_related("previous", "activated_by"),
        "run": TrainingRun.objects.filter(model_version=version).first(),
    }
    return render(request, "training/model_detail.html", context)


@login_required
def training_run_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    role_required(request.user)
    run = get_object_or_404(training_run_list(), pk=pk)
    context = {
        "run": run,
        "summary": metrics_summary(run.metrics),
        "plots": [
            (name.replace("_", " ").capitalize(), reverse("api:training-run-plot", kwargs={"pk": run.pk, "name": name}))
            for name in run.plots
        ],
        "is_live": run.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING),
    }
    return render(request, "training/run_detail.html", context)


@login_required
@require_POST
def training_run_create_view(request: HttpRequest) -> HttpResponse:
    _require_perm(request, "training.start_trainingrun")
    try:
        run = training_run_create(user=request.user, trigger="web")
    except ValidationError as error:
        for text in error.messages:
            messages.error(request, text)
        return redirect("training:models")
    if run.status == run.Status.FAILED:  # the broker was unreachable
        messages.error(request, run.error)
        return redirect("training:models")
    messages.success(request, f"Training run {run.pk} queued.")
    return redirect("training:run_detail", pk=run.pk)


@login_required
@require_POST
def model_version_activate_view(request: HttpRequest, pk: int) -> HttpResponse:
    _require_perm(request, "training.promote_modelversion")
    version = get_object_or_404(model_version_list(), pk=pk)
    written = request.POST.get("reason", "").strip()
    override = request.POST.get("override") == "on"
    if override:
        _require_perm(request, "training.override_modelversion")
    try:
        model_version_promote(
            model_version=version,
            user=request.user,
            # An override is judged on the reader's own words (the service wants a written reason).
            reason=written if override else written or "No reason given (web page).",
            override=override,
            address=request_address(request),
        )
    except ValidationError as error:
        for text in error.messages:
            messages.error(request, text)
        return redirect("training:model_detail", pk=version.pk)
    messages.success(request, f"{version.name} is now the active model.")
    return redirect("training:models")
