"""REST API for studies and reviews (and the audit trail): validate, select, call one service, serialize."""

import csv
from collections.abc import Iterator, Mapping
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.cache import patch_cache_control
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from studies.agreement import agreement_stats, dashboard_stats
from studies.audit import access_record, request_address
from studies.deidentify import notes_check, patient_ref_check
from studies.models import AccessEvent, Label, RejectReason, Study
from studies.permissions import CanUpload, HasRole, IsAdjudicator, IsReviewer, IsSiteLead
from studies.selectors import (
    QUEUE_ORDERS,
    access_event_list,
    adjudication_queue_list,
    review_card,
    review_queue_list,
    study_blinding,
    study_card_as_created,
    study_card_get_for_user,
    study_cards,
    study_files_get_for_user,
    study_get_for_user,
    study_image_for_browser,
    study_latest_prediction,
    study_list_ids,
)
from studies.services import (
    FREE_TEXT_MAX,
    image_check,
    review_adjudicate,
    review_submit,
    study_assign,
    study_create,
    study_delete,
    study_reject,
    study_send_back,
)
from studies.sites import site_for_upload, site_slug_for_upload

# Stands for the study's id in a reversed URL (no path or host holds these digits).
_ID_MARK = 987654321987654321


class RowSerializer(serializers.Serializer):
    """An output serializer of plain rows (dicts) whose fields each read one key, their ``source``
    ("*": the row, for method fields), and format it with their own to_representation; None stays None.
    DRF's general to_representation (attribute lookups through Mapping checks and a generator of the
    readable fields for every row) was half of serializing a page of study cards."""

    def to_representation(self, row: dict) -> dict:
        plan = self.__dict__.get("_plan")
        if plan is None:
            plan = self.__dict__["_plan"] = [(field.field_name, field.source, field) for field in self._readable_fields]
        data = {}
        for name, source, field in plan:
            value = row if source == "*" else row[source]
            data[name] = None if value is None else field.to_representation(value)
        return data


# The output serializers read the plain rows of studies.selectors.study_cards (review_card for a review
# just written): the blinding rules are applied there, so every field reads one key.
class PredictionOutputSerializer(RowSerializer):
    label = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())
    confidence = serializers.FloatField()
    model_version = serializers.CharField(source="model_version__name")
    inference_ms = serializers.FloatField()
    created_at = serializers.DateTimeField()


class ReviewOutputSerializer(RowSerializer):
    id = serializers.IntegerField()
    reviewer = serializers.CharField(source="reviewer__username")
    label = serializers.CharField()
    comment = serializers.CharField()
    kind = serializers.CharField(help_text="read, or adjudication (the final word over disagreeing readers).")
    round = serializers.IntegerField()
    reading_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class StudyOutputSerializer(RowSerializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    error = serializers.CharField()
    image_url = serializers.SerializerMethodField()
    heatmap_url = serializers.SerializerMethodField()
    uploaded_at = serializers.DateTimeField()
    uploaded_by = serializers.CharField(source="uploaded_by__username", default=None, allow_null=True)
    patient_ref = serializers.CharField(source="patient__ref")
    view = serializers.CharField()
    source = serializers.CharField()
    notes = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    prediction = PredictionOutputSerializer(allow_null=True, read_only=True)
    reviews = ReviewOutputSerializer(many=True, read_only=True)
    final_label = serializers.CharField(allow_null=True, read_only=True)
    reading_state = serializers.CharField()
    label_rule = serializers.CharField()
    reads_required = serializers.IntegerField(read_only=True)
    rejection_reason = serializers.CharField()
    rejection_comment = serializers.CharField()
    assigned_to = serializers.CharField(source="assigned_to__username", default=None, allow_null=True)
    blinded = serializers.DictField(child=serializers.BooleanField(), read_only=True)

    @cached_property
    def _url_parts(self) -> dict[str, tuple[str, str]]:
        """Each study URL (absolute with a request) split around the study's id: reversed once per
        serializer, not once per study (reverse() was a third of serializing a page)."""
        request = self.context.get("request")
        parts = {}
        for name in ("api:study-image", "api:study-heatmap"):
            path = reverse(name, kwargs={"pk": _ID_MARK})
            before, after = (request.build_absolute_uri(path) if request else path).split(str(_ID_MARK))
            parts[name] = (before, after)
        return parts

    def _url(self, name: str, card: dict) -> str:
        before, after = self._url_parts[name]
        return f"{before}{card['id']}{after}"

    def get_image_url(self, card: dict) -> str:
        return self._url("api:study-image", card)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_heatmap_url(self, card: dict) -> str | None:
        prediction = card["prediction"]
        return self._url("api:study-heatmap", card) if prediction and prediction["heatmap"] else None


def _field_check(check, value, field: str, *, as_dict: bool = False):
    """Run a service-level check; its ValidationError becomes the serializer's, under ``field``."""
    try:
        return check(value)
    except DjangoValidationError as exc:
        messages = exc.message_dict.get(field, exc.messages)
        raise serializers.ValidationError({field: messages} if as_dict else messages) from exc


class StudyListCreateApi(APIView):
    """GET: the studies you may see, filtered and paginated. POST: upload one image."""

    permission_classes = [HasRole, CanUpload]
    pagination_class = PageNumberPagination
    allowed_fields = {"image", "patient_ref", "view", "source", "notes"}

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyFilter"

        status = serializers.ChoiceField(choices=Study.Status.choices, required=False)
        reviewed = serializers.BooleanField(required=False, allow_null=True, default=None)
        label = serializers.ChoiceField(choices=Label.choices, required=False, help_text="Final (reviewed) label.")
        predicted_label = serializers.ChoiceField(choices=Label.choices, required=False)
        source = serializers.SlugField(required=False, help_text="A site's slug.")

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyUploadInput"

        image = serializers.FileField(
            help_text="A chest X-ray: PNG, JPEG or DICOM. De-identified before it is stored: DICOM rebuilt from an "
            "allow-list with pseudonymous UIDs and patient, PNG/JPEG stripped of all metadata (pixels kept)."
        )
        patient_ref = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=128,
            help_text="Pseudonymous patient key (letters, digits, . _ : -); never a name, date or hospital number. "
            "Left empty for a DICOM, a pseudonym keyed by the file's patient ID and the source is used.",
        )
        view = serializers.CharField(required=False, allow_blank=True, max_length=32)
        source = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=100,
            help_text="The site (slug) the study belongs to; may be left out by users of a single site.",
        )
        notes = serializers.CharField(
            required=False, allow_blank=True, max_length=FREE_TEXT_MAX, help_text="No names, dates or hospital numbers."
        )

        def validate_image(self, file):
            if file.size > settings.MAX_UPLOAD_BYTES:
                raise serializers.ValidationError(
                    f"The file is {file.size / 1e6:.1f} MB; the limit is {settings.MAX_UPLOAD_BYTES / 1e6:.0f} MB."
                )
            return file

        def validate_patient_ref(self, value: str) -> str:
            return _field_check(patient_ref_check, value, "patient_ref")

        def validate_notes(self, value: str) -> str:
            return _field_check(notes_check, value, "notes")

        def validate(self, attrs: dict) -> dict:
            # De-identification needs the site (its slug keys the pseudonyms) and patient_ref, so the image
            # is checked once they are valid; nothing is written until the whole upload is.
            attrs["site"] = site_for_upload(user=self.context["request"].user, source=attrs.get("source", ""))
            site_slug = site_slug_for_upload(site=attrs["site"], source=attrs.get("source", ""))
            attrs["image"] = _field_check(
                lambda file: image_check(file=file, source=site_slug, patient_ref=attrs.get("patient_ref", "")),
                attrs["image"],
                "image",
                as_dict=True,
            )
            return attrs

    @extend_schema(parameters=[FilterSerializer], responses=StudyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        ids = study_list_ids(user=request.user, filters=filters.validated_data)
        paginator = self.pagination_class()
        page = study_cards(user=request.user, ids=paginator.paginate_queryset(ids, request, view=self))
        return paginator.get_paginated_response(
            StudyOutputSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses={
            201: StudyOutputSerializer,
            413: OpenApiResponse(description="The body is over MAX_UPLOAD_BYTES; refused before it is read."),
        },
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, Mapping):
            raise ValidationError({"non_field_errors": ["Send a multipart form with the file as 'image'."]})
        unknown = set(request.data.keys()) - self.allowed_fields
        if unknown:
            raise ValidationError(
                {"non_field_errors": [f"Unknown field(s): {', '.join(sorted(unknown))}. Send the file as 'image'."]}
            )
        serializer = self.InputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        study = study_create(
            checked=data["image"],
            uploaded_by=request.user,
            site=data["site"],  # None: a new site this upload opens (OPEN_SITES), with its study or not at all
            source=data.get("source", ""),
            patient_ref=data.get("patient_ref", ""),
            view=data.get("view", ""),
            notes=data.get("notes", ""),
            address=request_address(request),
        )
        card = study_card_as_created(study=study, user=request.user)
        return Response(StudyOutputSerializer(card, context={"request": request}).data, status=status.HTTP_201_CREATED)


class StudyDetailDeleteApi(APIView):
    """GET: a study. DELETE: erase it (site leads of its site and superusers; others who see it get 403): its
    files and heatmaps go; in a frozen dataset snapshot it stays only as a withdrawn case. Audited."""

    @extend_schema(responses=StudyOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        card = study_card_get_for_user(user=request.user, study_id=pk)
        return Response(StudyOutputSerializer(card, context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        study = study_get_for_user(user=request.user, study_id=pk)
        study_delete(study=study, user=request.user, address=request_address(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class StudyImageApi(APIView):
    """The uploaded image, to users allowed to see the study (never a public media URL).

    ``?size=N`` returns a JPEG thumbnail whose longer side is at most N pixels; DICOM files
    are rendered as PNG, as browsers cannot show them."""

    class ParamsSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyImageParams"

        size = serializers.IntegerField(required=False, min_value=16, max_value=2048)

    @extend_schema(parameters=[ParamsSerializer], responses={(200, "image/*"): bytes})
    def get(self, request: Request, pk: int) -> HttpResponse:
        params = self.ParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        study = study_files_get_for_user(user=request.user, study_id=pk)
        size = params.validated_data.get("size")
        image = study_image_for_browser(study=study, size=size)
        access_record(
            user=request.user,
            action=AccessEvent.Action.IMAGE,
            study=study,
            detail=f"size={size}" if size else "full",
            address=request_address(request),
        )
        if isinstance(image.content, bytes):
            return _not_stored(HttpResponse(image.content, content_type=image.content_type))
        return _not_stored(FileResponse(image.content))


def _not_stored(response: HttpResponse) -> HttpResponse:
    """Patient images stay out of every cache, the browser's disk and shared proxies alike (each view is audited)."""
    patch_cache_control(response, no_store=True, private=True)
    return response


class StudyHeatmapApi(APIView):
    """The Grad-CAM overlay of the latest prediction (not to a reader blinded to the model)."""

    @extend_schema(responses={(200, "image/jpeg"): bytes})
    def get(self, request: Request, pk: int) -> FileResponse:
        study = study_get_for_user(user=request.user, study_id=pk)
        prediction = None if study_blinding(user=request.user, study=study)[1] else study_latest_prediction(study)
        if prediction is None or not prediction.heatmap:
            raise Http404("This study has no heatmap.")
        access_record(
            user=request.user,
            action=AccessEvent.Action.HEATMAP,
            study=study,
            detail=f"prediction {prediction.pk}",
            address=request_address(request),
        )
        try:
            heatmap = prediction.heatmap.open("rb")
        except FileNotFoundError as exc:
            raise Http404("This study's heatmap is not in storage.") from exc
        return _not_stored(FileResponse(heatmap))


class ReviewCreateApi(APIView):
    """A reader confirms or corrects the prediction. The study's final label follows its rule
    (``label_rule``): with one read required the latest read, with more the unanimous readers, else
    an adjudicator's label."""

    permission_classes = [HasRole, IsReviewer]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewInput"

        label = serializers.ChoiceField(choices=Label.choices)
        comment = serializers.CharField(required=False, allow_blank=True, max_length=FREE_TEXT_MAX)
        reading_ms = serializers.IntegerField(
            required=False, min_value=0, max_value=24 * 3600 * 1000, help_text="Time spent reading, in ms."
        )

    @extend_schema(request=InputSerializer, responses={201: ReviewOutputSerializer})
    def post(self, request: Request, pk: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = study_get_for_user(user=request.user, study_id=pk)
        review = review_submit(
            study=study, reviewer=request.user, address=request_address(request), **serializer.validated_data
        )
        return Response(ReviewOutputSerializer(review_card(review)).data, status=status.HTTP_201_CREATED)


def _study_response(request: Request, study: Study, code: int = status.HTTP_200_OK) -> Response:
    card = study_card_get_for_user(user=request.user, study_id=study.pk)
    return Response(StudyOutputSerializer(card, context={"request": request}).data, status=code)


class StudyRejectApi(APIView):
    """Reject a study with a reason: it leaves reading and never enters a dataset."""

    permission_classes = [IsReviewer]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyRejectInput"

        reason = serializers.ChoiceField(choices=RejectReason.choices)
        comment = serializers.CharField(required=False, allow_blank=True, max_length=FREE_TEXT_MAX)

    @extend_schema(request=InputSerializer, responses=StudyOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = study_get_for_user(user=request.user, study_id=pk)
        rejected = study_reject(
            study=study, reviewer=request.user, address=request_address(request), **serializer.validated_data
        )
        return _study_response(request, rejected)


class StudySendBackApi(APIView):
    """Send a study back for reading: a new round starts, earlier reads stay in its history."""

    permission_classes = [IsReviewer]

    @extend_schema(request=None, responses=StudyOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        study = study_get_for_user(user=request.user, study_id=pk)
        return _study_response(
            request, study_send_back(study=study, user=request.user, address=request_address(request))
        )


class StudyAssignApi(APIView):
    """Put a study in one reviewer's queue; ``reviewer: null`` gives it back to every reviewer."""

    permission_classes = [IsAdjudicator]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyAssignInput"

        reviewer = serializers.CharField(allow_null=True, allow_blank=True, help_text="A reviewer's username.")

    @extend_schema(request=InputSerializer, responses=StudyOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = study_get_for_user(user=request.user, study_id=pk)
        return _study_response(
            request,
            study_assign(
                study=study, user=request.user, reviewer_username=serializer.validated_data["reviewer"] or None
            ),
        )


class StudyAdjudicateApi(APIView):
    """An adjudicator sets the final label of a study whose readers disagree, with a reason."""

    permission_classes = [IsAdjudicator]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyAdjudicateInput"

        label = serializers.ChoiceField(choices=Label.choices)
        reason = serializers.CharField(max_length=FREE_TEXT_MAX)

    @extend_schema(request=InputSerializer, responses={201: ReviewOutputSerializer})
    def post(self, request: Request, pk: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = study_get_for_user(user=request.user, study_id=pk)
        review = review_adjudicate(
            study=study, adjudicator=request.user, address=request_address(request), **serializer.validated_data
        )
        return Response(ReviewOutputSerializer(review_card(review)).data, status=status.HTTP_201_CREATED)


class ReviewQueueApi(APIView):
    """The studies waiting for you, in reading order: the reading page fetches the next few from here."""

    permission_classes = [IsReviewer]

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewQueueFilter"

        source = serializers.CharField(required=False, allow_blank=True)
        predicted_label = serializers.ChoiceField(choices=Label.choices, required=False, allow_blank=True)
        uploaded_from = serializers.DateField(required=False, allow_null=True)
        uploaded_to = serializers.DateField(required=False, allow_null=True)
        mine = serializers.BooleanField(required=False, default=False, help_text="Only studies assigned to you.")
        order = serializers.ChoiceField(choices=list(QUEUE_ORDERS), required=False, default="uncertainty")
        exclude = serializers.RegexField(
            r"^[0-9]{0,9}(,[0-9]{0,9})*$",  # declared as the schema's pattern, so clients know the form
            required=False,
            allow_blank=True,
            max_length=2000,
            help_text="Comma-separated ids (skipped).",
        )
        limit = serializers.IntegerField(required=False, min_value=1, max_value=50, default=3)

        def validate_exclude(self, value: str) -> list[int]:
            try:
                return [int(part) for part in value.split(",") if part.strip()]
            except ValueError as exc:
                raise serializers.ValidationError("A comma-separated list of study ids.") from exc

    class OutputSerializer(serializers.Serializer):
        count = serializers.IntegerField()
        results = StudyOutputSerializer(many=True)

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = dict(filters.validated_data)
        limit = data.pop("limit")
        queryset = review_queue_list(user=request.user, exclude_ids=data.pop("exclude", []), **data)
        studies = study_cards(user=request.user, ids=list(queryset.values_list("pk", flat=True)[:limit]))
        context = {"request": request}
        return Response(
            {"count": queryset.count(), "results": StudyOutputSerializer(studies, many=True, context=context).data}
        )


class AdjudicationQueueApi(APIView):
    """Studies whose readers disagree, oldest first."""

    permission_classes = [IsAdjudicator]
    pagination_class = PageNumberPagination  # also makes the schema declare the paginated body

    @extend_schema(responses=StudyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        ids = adjudication_queue_list(user=request.user).values_list("pk", flat=True)
        page = study_cards(user=request.user, ids=paginator.paginate_queryset(ids, request, view=self))
        return paginator.get_paginated_response(
            StudyOutputSerializer(page, many=True, context={"request": request}).data
        )


def _model_figures_by_source() -> list[dict]:
    """Each model version's test figures per source (its metrics), oldest first."""
    from training.selectors import model_version_list

    versions = []
    for version in reversed(list(model_version_list())):
        per_source = (version.metrics or {}).get("per_source") or {}
        versions.append(
            {
                "version": version.name,
                "active": version.is_active,
                "created_at": version.created_at,
                "per_source": {
                    source: {key: values.get(key) for key in ("n", "accuracy", "macro_auc")}
                    for source, values in per_source.items()
                },
            }
        )
    return versions


class StatsApi(APIView):
    """Reading and dashboard figures: agreement (Cohen's kappa per reader pair, Fleiss' kappa,
    each reader against the final label and the model; overall, per source, per week), studies per
    day, backlog, final labels per source, and each model version's per-source test figures."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response(
            {
                "agreement": agreement_stats(user=request.user),
                **dashboard_stats(user=request.user),
                "models": _model_figures_by_source(),
            }
        )


class AccessEventOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    username = serializers.CharField()
    action = serializers.CharField()
    study = serializers.IntegerField(source="study_id_ref", allow_null=True)
    site = serializers.CharField(source="site.slug", default=None, allow_null=True)
    detail = serializers.CharField()
    address = serializers.CharField(allow_null=True)


class AccessEventListApi(APIView):
    """The audit trail, newest first: site leads see the events about studies of the sites they lead,
    superusers every event (logins and model activations included)."""

    permission_classes = [HasRole, IsSiteLead]
    pagination_class = PageNumberPagination

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AccessEventFilter"

        action = serializers.ChoiceField(choices=AccessEvent.Action.choices, required=False)
        date_from = serializers.DateField(required=False, help_text="Events on or after this day.")
        date_to = serializers.DateField(required=False, help_text="Events on or before this day.")
        study = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1, help_text="A study id.")

    @extend_schema(parameters=[FilterSerializer], responses=AccessEventOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            access_event_list(user=request.user, **filters.validated_data), request, view=self
        )
        return paginator.get_paginated_response(AccessEventOutputSerializer(page, many=True).data)


AUDIT_CSV_COLUMNS = ["at", "username", "action", "study", "site", "detail", "address"]


def _csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: a failed login's username is anyone's text, and a leading = + - @
    would make it a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    """csv.writer's file: each row comes back as the text to stream."""

    def write(self, value: str) -> str:
        return value


class AccessEventExportApi(APIView):
    """The audit trail as CSV (the list's filters, every matching row, newest first), for the list's readers."""

    permission_classes = [HasRole, IsSiteLead]

    @extend_schema(parameters=[AccessEventListApi.FilterSerializer], responses={(200, "text/csv"): bytes})
    def get(self, request: Request) -> StreamingHttpResponse:
        filters = AccessEventListApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        events = access_event_list(user=request.user, **filters.validated_data)
        writer = csv.writer(_Echo())

        def rows() -> Iterator[str]:
            yield writer.writerow(AUDIT_CSV_COLUMNS)
            for event in events.iterator(chunk_size=2000):
                site = event.site.slug if event.site else None
                row = [event.at.isoformat(), event.username, event.action, event.study_id_ref, site, event.detail,
                       event.address]  # fmt: skip
                yield writer.writerow([_csv_cell(value) for value in row])

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit-trail.csv"'
        return response
