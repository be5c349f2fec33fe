"""Reads for studies; access rules live here once."""

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import NullIf
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from inference.preprocessing import ImageDecodeError, display_image, thumbnail_jpeg
from studies.models import AccessEvent, Prediction, Review, Site, Study
from studies.sites import REVIEW_ROLES, Role, user_can_upload, user_is_adjudicator, user_is_reviewer, user_site_ids

logger = logging.getLogger(__name__)

__all__ = ["user_can_upload", "user_is_adjudicator", "user_is_reviewer"]  # the role checks live in studies.sites


@dataclass(frozen=True)
class BrowserImage:
    content: bytes | File  # bytes of a rendition, or the stored file itself
    content_type: str | None = None


def reads_required(*, source: str, site_setting: int | None) -> int:
    """Independent reads a study of ``source`` needs: its site's own setting (Site.reads_required, set in
    the admin), else the deployment's REVIEW_READS_REQUIRED_BY_SOURCE entry, else REVIEW_READS_REQUIRED."""
    if site_setting:
        return int(site_setting)
    return int(settings.REVIEW_READS_REQUIRED_BY_SOURCE.get(source, settings.REVIEW_READS_REQUIRED))


def study_reads_required(*, study: Study) -> int:
    return reads_required(source=study.source, site_setting=study.site.reads_required)


def study_blinding(*, user: AbstractBaseUser, study: Study) -> tuple[bool, bool]:
    """(hide other reads, hide the model's prediction) for this user on this study (see _blinding)."""
    reads = ((r.reviewer_id, r.round, r.kind) for r in study.reviews.all())
    return _blinding(
        user, reading_state=study.reading_state, reading_round=study.reading_round, source=study.source, reads=reads
    )


Read = tuple[int, int, str]  # a review as the blinding rules see it: reviewer id, round, kind
# Reading states in which readers are still blinded to each other (and, on a blinded source, to the model).
OPEN_READING_STATES = (Study.Reading.UNREAD, Study.Reading.READING, Study.Reading.DISAGREEMENT)


def _blinding(
    user: AbstractBaseUser, *, reading_state: str, reading_round: int, source: str, reads: Iterable[Read]
) -> tuple[bool, bool]:
    """(hide other reads, hide the model's prediction) for this user on a study in ``reading_state``, round
    ``reading_round``, from ``source``, whose reviews are ``reads`` (reviewer id, round, kind).

    A reader who has not read the study in its current round sees neither other readers' labels nor
    the final label, and on a blinded source (REVIEW_BLIND_TO_MODEL_SOURCES) not the model's answer
    either. Adjudicators and staff see everything; so do uploaders, who never read."""
    if not user_is_reviewer(user) or user_is_adjudicator(user):
        return False, False
    if reading_state not in OPEN_READING_STATES:
        return False, False
    has_read = any(
        reviewer_id == user.pk and round_ == reading_round and kind == Review.Kind.READ
        for reviewer_id, round_, kind in reads
    )
    if has_read:
        return False, False
    return True, source in settings.REVIEW_BLIND_TO_MODEL_SOURCES


def studies_model_hidden(*, user: AbstractBaseUser) -> Q | None:
    """study_blinding's hidden model answers as a filter: the open studies of blinded sources that ``user`` (a
    reader, not an adjudicator) has not read in their current round; None when no answer is hidden from them.
    A filter on the predicted label must not find these, or it would tell the reader what the model said."""
    if not settings.REVIEW_BLIND_TO_MODEL_SOURCES or not user_is_reviewer(user) or user_is_adjudicator(user):
        return None
    blinded = Q(source__in=settings.REVIEW_BLIND_TO_MODEL_SOURCES, reading_state__in=OPEN_READING_STATES)
    return blinded & ~Q(Exists(_read_by(user)))


def _read_by(user: AbstractBaseUser) -> QuerySet[Review]:
    """``user``'s reads of the outer study in its current round (a subquery)."""
    return Review.objects.filter(
        study=OuterRef("pk"), reviewer=user, round=OuterRef("reading_round"), kind=Review.Kind.READ
    )


def _model_answers_shown(studies: QuerySet[Study], *, user: AbstractBaseUser) -> QuerySet[Study]:
    """``studies`` without those whose model answer is hidden from ``user``: a filter on the predicted label
    must not find them (studies_model_hidden)."""
    hidden = studies_model_hidden(user=user)
    return studies if hidden is None else studies.exclude(hidden)


def study_image_for_browser(*, study: Study, size: int | None = None) -> BrowserImage:
    """What a browser is shown: ``size`` gives a JPEG of at most that side; DICOM becomes PNG. Both are cut from the
    rendition the predicting worker stored, so no request decodes an original once a study is predicted (before, or
    for a study stored before renditions existed, the original is decoded within the decoders' limits). Http404 when
    the file is gone from storage (a lost volume, a restore) or no longer decodes (its prediction failed so)."""
    try:
        return _study_image_for_browser(study=study, size=size)
    except FileNotFoundError as exc:
        logger.warning("Study %s: its image file is missing from storage (%s)", study.pk, exc)
        raise Http404("This study's image is not in storage.") from exc
    except ImageDecodeError as exc:
        raise Http404(f"This study's stored image cannot be shown: {exc}") from exc


def _study_image_for_browser(*, study: Study, size: int | None) -> BrowserImage:
    if study.rendition:
        if size:
            return BrowserImage(thumbnail_jpeg(study.rendition.path, max_side=size), "image/jpeg")
        if study.image.name.endswith(".dcm"):
            with study.rendition.open("rb") as rendition:
                return BrowserImage(rendition.read(), "image/png")
    elif size:
        return BrowserImage(display_image(study.image.path, max_side=size, image_format="JPEG"), "image/jpeg")
    elif study.image.name.endswith(".dcm"):
        return BrowserImage(display_image(study.image.path), "image/png")
    return BrowserImage(study.image.open("rb"))


def study_annotate_labels(queryset: QuerySet[Study]) -> QuerySet[Study]:
    """Add final_label (by the study's label rule; never a rejected study's), is_reviewed (it has a final
    label), predicted_label, predicted_confidence and predicted_entropy."""
    return queryset.annotate(
        final_label=NullIf(F("label_final"), Value("")),
        is_reviewed=ExpressionWrapper(Q(reading_state=Study.Reading.FINAL), output_field=BooleanField()),
        predicted_label=_latest_prediction("label"),
        predicted_confidence=_latest_prediction("confidence"),
        predicted_entropy=_latest_prediction("entropy"),
    )


def _latest_prediction(field: str) -> Subquery:
    """``field`` of the study's latest prediction, as a subquery."""
    latest = Prediction.objects.filter(study=OuterRef("pk")).order_by("-created_at", "-id")
    return Subquery(latest.values(field)[:1])


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
        .select_related("patient", "uploaded_by", "site")
        .prefetch_related(
            Prefetch("predictions", queryset=Prediction.objects.select_related("model_version").defer(*_HEAVY)),
            Prefetch("reviews", queryset=Review.objects.select_related("reviewer")),
        )
    )


def studies_visible(*, user: AbstractBaseUser) -> QuerySet[Study]:
    """By site membership: reviewers and site leads see every study of their sites, uploaders the
    studies they uploaded there; superusers see all; anyone else (staff included) sees none."""
    if not user.is_authenticated:
        return Study.objects.none()
    if user.is_superuser:
        return Study.objects.all()
    # Only the branches the user's memberships need: building the SQL is most of a query's cost here.
    visible = Q()
    if reviewed := user_site_ids(user, roles=REVIEW_ROLES):
        visible |= Q(site_id__in=reviewed)
    if uploaded := user_site_ids(user, roles=(Role.UPLOADER,)):
        visible |= Q(site_id__in=uploaded, uploaded_by=user)
    return Study.objects.filter(visible) if visible else Study.objects.none()


def study_visible_queryset(*, user: AbstractBaseUser) -> QuerySet[Study]:
    """The studies a user may see (studies_visible), annotated for pages and JSON."""
    return study_annotate(studies_visible(user=user))


def _study_filter(filters: dict | None) -> Q:
    """Validated filter values (StudyListCreateApi.FilterSerializer) as conditions on a study's own columns,
    but predicted_label (an annotation, see _latest_prediction); a None value means any. ``reviewed`` is
    study_annotate_labels' is_reviewed, ``label`` its final_label (never empty when asked for)."""
    condition = Q()
    for key, value in (filters or {}).items():
        if value is None:
            continue
        if key == "reviewed":
            reviewed = Q(reading_state=Study.Reading.FINAL)
            condition &= reviewed if value else ~reviewed
        elif key == "label":
            condition &= Q(label_final=value)
        else:  # status, source, predicted_label
            condition &= Q(**{key: value})
    return condition


def study_list(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[Study]:
    """The studies a user may see, narrowed by validated filters; a None value means any."""
    studies = study_visible_queryset(user=user).filter(_study_filter(filters))
    return _model_answers_shown(studies, user=user) if (filters or {}).get("predicted_label") is not None else studies


def study_list_ids(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet:
    """The ids of study_list, in its order: page over these, then read the page with study_cards.
    Only the annotation a filter needs is computed, and only for the rows it looks at; paging the
    annotated list computed every label of every row skipped before a deep page."""
    studies = studies_visible(user=user)
    if (filters or {}).get("predicted_label") is not None:
        studies = _model_answers_shown(studies.annotate(predicted_label=_latest_prediction("label")), user=user)
    return studies.filter(_study_filter(filters)).values_list("pk", flat=True)


# What the API shows of a study (studies.apis.StudyOutputSerializer), of its predictions and of its
# reviews: the columns a page of cards reads as plain rows, or that a card takes from an object just
# written (study_card_as_created, review_card).
STUDY_CARD_FIELDS = (
    "id",
    "status",
    "error",
    "uploaded_at",
    "uploaded_by__username",
    "patient__ref",
    "view",
    "source",
    "notes",
    "width",
    "height",
    "reading_state",
    "reading_round",
    "label_final",
    "label_rule",
    "rejection_reason",
    "rejection_comment",
    "assigned_to__username",
    "site__reads_required",
)
PREDICTION_CARD_FIELDS = (
    "study_id",
    "id",
    "label",
    "probabilities",
    "confidence",
    "model_version__name",
    "inference_ms",
    "heatmap",
    "created_at",
)
REVIEW_CARD_FIELDS = (
    "study_id",
    "id",
    "reviewer_id",
    "reviewer__username",
    "label",
    "comment",
    "kind",
    "round",
    "reading_ms",
    "created_at",
)


def study_cards(*, user: AbstractBaseUser, ids: list[int]) -> list[dict]:
    """What the API shows of the studies ``ids`` that the user may see, in the order of ``ids``: three
    queries of plain rows (the studies with their patient and people, their predictions, their reviews),
    the latest prediction picked and the blinding rules applied (_blinding). Building model instances,
    prefetching onto them and serializing them with nested serializers was two thirds of a list
    request's time."""
    studies = {row["id"]: row for row in studies_visible(user=user).filter(pk__in=ids).values(*STUDY_CARD_FIELDS)}
    predictions: defaultdict[int, list[dict]] = defaultdict(list)
    reviews: defaultdict[int, list[dict]] = defaultdict(list)
    if studies:
        for row in Prediction.objects.filter(study_id__in=studies).order_by().values(*PREDICTION_CARD_FIELDS):
            predictions[row["study_id"]].append(row)
        for row in Review.objects.filter(study_id__in=studies).values(*REVIEW_CARD_FIELDS):  # newest first
            reviews[row["study_id"]].append(row)
    return [
        _study_card(user=user, study=studies[pk], predictions=predictions[pk], reviews=reviews[pk])
        for pk in ids
        if pk in studies
    ]


def study_card_get_for_user(*, user: AbstractBaseUser, study_id: int) -> dict:
    """study_cards of one study; Http404 when the user may not see it (or it does not exist)."""
    if not 0 < study_id < 2**63:  # beyond every id column (SQLite raises OverflowError on it in an IN list)
        raise Http404("No Study matches the given query.")
    cards = study_cards(user=user, ids=[study_id])
    if not cards:
        raise Http404("No Study matches the given query.")
    return cards[0]


def study_card_as_created(*, study: Study, user: AbstractBaseUser) -> dict:
    """The card of a study just stored, without another query: it has no prediction and no review yet.
    An upload's answer then needs nothing more from the database, so a database lost after the commit
    cannot turn a stored study into an error (and a retry)."""
    return _study_card(user=user, study=_values_of(study, STUDY_CARD_FIELDS), predictions=[], reviews=[])


def review_card(review: Review) -> dict:
    """A review as a study card shows it (studies.apis.ReviewOutputSerializer), from the object."""
    return _values_of(review, REVIEW_CARD_FIELDS)


def _values_of(instance: object, fields: tuple[str, ...]) -> dict:
    """What ``.values(*fields)`` gives for ``instance``, read from the object and its loaded relations."""
    row = {}
    for name in fields:
        value = instance
        for part in name.split("__"):
            value = None if value is None else getattr(value, part)
        row[name] = value
    return row


def _study_card(*, user: AbstractBaseUser, study: dict, predictions: list[dict], reviews: list[dict]) -> dict:
    """A study row plus what the user is shown of its predictions and reviews: the latest prediction
    unless the model is hidden, the reviews and the final label unless other reads are hidden."""
    hide_reads, hide_model = _blinding(
        user,
        reading_state=study["reading_state"],
        reading_round=study["reading_round"],
        source=study["source"],
        reads=((r["reviewer_id"], r["round"], r["kind"]) for r in reviews),
    )
    shown = None if hide_model or not predictions else max(predictions, key=lambda p: (p["created_at"], p["id"]))
    study["prediction"] = shown
    study["reviews"] = [] if hide_reads else reviews
    study["final_label"] = None if hide_reads else study["label_final"] or None
    study["reads_required"] = reads_required(source=study["source"], site_setting=study["site__reads_required"])
    study["blinded"] = {"reads": hide_reads, "model": hide_model}
    return study


def access_events_visible(*, user: AbstractBaseUser) -> QuerySet[AccessEvent]:
    """The audit trail a user may read: superusers all of it, site leads the events about studies of the sites
    they lead (events about no study, such as logins and model activations, only superusers); others none."""
    if not user.is_authenticated:
        return AccessEvent.objects.none()
    if user.is_superuser:
        return AccessEvent.objects.all()
    return AccessEvent.objects.filter(site__in=user_site_ids(user, roles=(Role.LEAD,)))


def access_event_list(
    *,
    user: AbstractBaseUser,
    action: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    study: int | None = None,
) -> QuerySet[AccessEvent]:
    """The visible audit trail, newest first, narrowed by action, study and days (both ends included)."""
    events = access_events_visible(user=user).select_related("site")
    if action:
        events = events.filter(action=action)
    if date_from is not None:
        events = events.filter(at__date__gte=date_from)
    if date_to is not None:
        events = events.filter(at__date__lte=date_to)
    if study is not None:
        events = events.filter(study_id_ref=study)
    return events


def study_get_for_user(*, user: AbstractBaseUser, study_id: int) -> Study:
    return get_object_or_404(study_visible_queryset(user=user), pk=study_id)


def study_files_get_for_user(*, user: AbstractBaseUser, study_id: int) -> Study:
    """A visible study with only its files: the image endpoint, asked once per thumbnail, needs
    neither the label annotations nor the prefetched predictions and reviews."""
    return get_object_or_404(studies_visible(user=user).only("id", "image", "rendition"), pk=study_id)


QUEUE_ORDERS = {
    # The most uncertain prediction first: where a reader helps the model most.
    "uncertainty": ("-predicted_entropy", "predicted_confidence", "uploaded_at", "id"),
    "age": ("uploaded_at", "id"),
    # Model-reader disagreement: for those who may see other reads (adjudicators), the studies where a reader of
    # this round contradicted the model first; then, for everyone, the answers readers overrule most often at
    # the study's source (model_overruled_rates); then the most uncertain.
    "disagreement": ("-model_contradicted", "-model_overruled", "-predicted_entropy", "uploaded_at", "id"),
}


def model_overruled_rates(*, user: AbstractBaseUser) -> dict[tuple[str, str], float]:
    """Per (source, the model's answer): how often readers overruled that answer, over the studies with a final
    label that ``user`` may see, add-one smoothed, (overruled + 1) / (n + 2), so that one case is not a certainty;
    a pair with no history is 0.5."""
    rows = (
        studies_visible(user=user)
        .filter(reading_state=Study.Reading.FINAL)
        .annotate(answer=_latest_prediction("label"))
        .exclude(answer=None)
        .values("source", "answer")
        .annotate(n=Count("id"), overruled=Count("id", filter=~Q(label_final=F("answer"))))
        .order_by()
    )
    return {(row["source"], row["answer"]): (row["overruled"] + 1) / (row["n"] + 2) for row in rows}


def review_queue_list(
    *,
    user: AbstractBaseUser,
    source: str | None = None,
    predicted_label: str | None = None,
    uploaded_from: date | None = None,
    uploaded_to: date | None = None,
    mine: bool = False,
    order: str = "uncertainty",
    exclude_ids: list[int] | tuple[int, ...] = (),
) -> QuerySet[Study]:
    """The studies waiting for this reader: predicted, still open, of the sites they review, not their
    own uploads (unless ALLOW_SELF_REVIEW), not read by them in this round, assigned to them or to
    nobody (``mine``: only those assigned to them)."""
    queryset = (
        study_visible_queryset(user=user)
        .filter(status=Study.Status.PREDICTED, reading_state__in=[Study.Reading.UNREAD, Study.Reading.READING])
        .exclude(Exists(_read_by(user)))
    )
    if order == "disagreement":
        queryset = _annotate_disagreement(queryset, user=user)
    if not user.is_superuser:
        queryset = queryset.filter(site__in=user_site_ids(user, roles=REVIEW_ROLES))
    if not settings.ALLOW_SELF_REVIEW:
        queryset = queryset.exclude(uploaded_by_id=user.pk)
    queryset = queryset.filter(assigned_to=user) if mine else queryset.filter(Q(assigned_to=None) | Q(assigned_to=user))
    if source:
        queryset = queryset.filter(source=source)
    if predicted_label:
        queryset = _model_answers_shown(queryset.filter(predicted_label=predicted_label), user=user)
    if uploaded_from:
        queryset = queryset.filter(uploaded_at__date__gte=uploaded_from)
    if uploaded_to:
        queryset = queryset.filter(uploaded_at__date__lte=uploaded_to)
    if exclude_ids:
        queryset = queryset.exclude(pk__in=exclude_ids)
    return queryset.order_by(*QUEUE_ORDERS[order])


def _annotate_disagreement(queryset: QuerySet[Study], *, user: AbstractBaseUser) -> QuerySet[Study]:
    """The "disagreement" order's keys, telling a reader nothing study_blinding hides: whether another reader
    of this round contradicted the model only for users who see other reads; the source's overruled rate of
    the model's answer never for an answer hidden from the user (it would sort a blinded source by answer)."""
    if user_is_adjudicator(user):
        contradicted = Review.objects.filter(
            study=OuterRef("pk"), round=OuterRef("reading_round"), kind=Review.Kind.READ
        ).exclude(label=OuterRef("predicted_label"))
        queryset = queryset.annotate(model_contradicted=Exists(contradicted))
    else:
        queryset = queryset.annotate(model_contradicted=Value(False))
    hidden = studies_model_hidden(user=user)
    rates = [
        When(source=source, predicted_label=answer, then=Value(rate))
        for (source, answer), rate in model_overruled_rates(user=user).items()
    ]
    if hidden is not None:
        rates.insert(0, When(hidden, then=Value(0.5)))
    return queryset.annotate(model_overruled=Case(*rates, default=Value(0.5), output_field=FloatField()))


def review_queue_sources(*, user: AbstractBaseUser) -> QuerySet:
    """The sources (site slugs) whose studies the user reads, which the queue's source filter offers: the sites
    where they review or lead (superusers: every site), never the names of other hospitals."""
    sites = (
        Site.objects.all() if user.is_superuser else Site.objects.filter(pk__in=user_site_ids(user, roles=REVIEW_ROLES))
    )
    return sites.order_by("slug").values_list("slug", flat=True)


def adjudication_queue_list(*, user: AbstractBaseUser) -> QuerySet[Study]:
    """Studies whose readers disagree, oldest first."""
    return study_visible_queryset(user=user).filter(reading_state=Study.Reading.DISAGREEMENT).order_by("uploaded_at")


def study_reads(study: Study) -> list[Review]:
    """The reads and adjudications of the study's current round, oldest first (from the prefetch)."""
    return sorted(
        (r for r in study.reviews.all() if r.round == study.reading_round), key=lambda r: (r.created_at, r.id)
    )


def studies_awaiting_reprediction(*, model_version_id: int, after_id: int, limit: int) -> list[int]:
    """Ids of predicted, unreviewed studies that ``model_version`` has not answered, in id order after a cursor."""
    answered = Prediction.objects.filter(study=OuterRef("pk"), model_version_id=model_version_id)
    return list(
        Study.objects.filter(status=Study.Status.PREDICTED, pk__gt=after_id)
        .exclude(Exists(Review.objects.filter(study=OuterRef("pk"))))
        .exclude(Exists(answered))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def studies_waiting_for_prediction() -> bool:
    """Whether new uploads are waiting or being predicted: re-prediction gives way to them."""
    return Study.objects.filter(status__in=[Study.Status.QUEUED, Study.Status.PROCESSING]).exists()


def study_status(study_id: int) -> str | None:
    """A study's status, None if it does not exist: one indexed read."""
    return Study.objects.filter(pk=study_id).values_list("status", flat=True).first()


def studies_queued_at_least(count: int) -> bool:
    """Whether at least ``count`` studies wait in the queue; counts no further than that (a backlog
    of thousands after a broker outage costs the same as a full batch)."""
    return Study.objects.filter(status=Study.Status.QUEUED)[:count].count() >= count


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
