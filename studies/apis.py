"""REST API for studies and reviews: validate, select, call one service, serialize."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse, Http404, HttpResponse
from django.urls import reverse
from django.utils.cache import patch_cache_control
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference.preprocessing import display_image
from studies.models import Label, Study
from studies.permissions import CanUpload, IsReviewer
from studies.selectors import (
    study_as_created,
    study_get_for_user,
    study_latest_prediction,
    study_list_ids,
    study_page,
)
from studies.services import image_check, review_submit, study_create


class PredictionOutputSerializer(serializers.Serializer):
    label = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())
    confidence = serializers.FloatField()
    model_version = serializers.CharField(source="model_version.name")
    inference_ms = serializers.FloatField()
    created_at = serializers.DateTimeField()


class ReviewOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reviewer = serializers.CharField(source="reviewer.username")
    label = serializers.CharField()
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()


class StudyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    error = serializers.CharField()
    image_url = serializers.SerializerMethodField()
    heatmap_url = serializers.SerializerMethodField()
    uploaded_at = serializers.DateTimeField()
    uploaded_by = serializers.CharField(source="uploaded_by.username", default=None)
    patient_ref = serializers.CharField(source="patient.ref")
    view = serializers.CharField()
    source = serializers.CharField()
    notes = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    prediction = serializers.SerializerMethodField()
    reviews = ReviewOutputSerializer(many=True)
    final_label = serializers.CharField(allow_null=True)

    def _url(self, name: str, study: Study) -> str:
        path = reverse(name, kwargs={"pk": study.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_image_url(self, study: Study) -> str:
        return self._url("api:study-image", study)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_heatmap_url(self, study: Study) -> str | None:
        prediction = study_latest_prediction(study)
        return self._url("api:study-heatmap", study) if prediction and prediction.heatmap else None

    @extend_schema_field(PredictionOutputSerializer(allow_null=True))
    def get_prediction(self, study: Study) -> dict | None:
        prediction = study_latest_prediction(study)
        if prediction is None:
            return None
        # One nested serializer for the whole page: building one per study (fields deep-copied
        # each time) was a quarter of a list request's time.
        if getattr(self, "_prediction_output", None) is None:
            self._prediction_output = PredictionOutputSerializer()
        return self._prediction_output.to_representation(prediction)


class StudyListCreateApi(APIView):
    """GET: the studies you may see, filtered and paginated. POST: upload one image."""

    permission_classes = [CanUpload]
    allowed_fields = {"image", "patient_ref", "view", "source", "notes"}

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyFilter"

        status = serializers.ChoiceField(choices=Study.Status.choices, required=False)
        reviewed = serializers.BooleanField(required=False, allow_null=True, default=None)
        label = serializers.ChoiceField(choices=Label.choices, required=False, help_text="Final (reviewed) label.")
        predicted_label = serializers.ChoiceField(choices=Label.choices, required=False)
        source = serializers.CharField(required=False)

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "StudyUploadInput"

        image = serializers.FileField(help_text="A chest X-ray: PNG, JPEG or DICOM.")
        patient_ref = serializers.CharField(
            required=False, allow_blank=True, max_length=128, help_text="Pseudonymous patient key; never a name."
        )
        view = serializers.CharField(required=False, allow_blank=True, max_length=32)
        source = serializers.CharField(required=False, allow_blank=True, max_length=100)
        notes = serializers.CharField(required=False, allow_blank=True, max_length=5000)

        def validate_image(self, file):
            if file.size > settings.MAX_UPLOAD_BYTES:
                raise serializers.ValidationError(
                    f"The file is {file.size / 1e6:.1f} MB; the limit is {settings.MAX_UPLOAD_BYTES / 1e6:.0f} MB."
                )
            try:
                return image_check(file=file)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.message_dict.get("image", exc.messages)) from exc

    @extend_schema(parameters=[FilterSerializer], responses=StudyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        ids = study_list_ids(user=request.user, filters=filters.validated_data)
        paginator = PageNumberPagination()
        page = study_page(ids=paginator.paginate_queryset(ids, request, view=self))
        return paginator.get_paginated_response(
            StudyOutputSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: StudyOutputSerializer})
    def post(self, request: Request) -> Response:
        unknown = set(request.data.keys()) - self.allowed_fields
        if unknown:
            raise ValidationError(
                {"non_field_errors": [f"Unknown field(s): {', '.join(sorted(unknown))}. Send the file as 'image'."]}
            )
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        study = study_create(
            checked=data["image"],
            uploaded_by=request.user,
            patient_ref=data.get("patient_ref", ""),
            view=data.get("view", ""),
            source=data.get("source", ""),
            notes=data.get("notes", ""),
        )
        output = StudyOutputSerializer(study_as_created(study), context={"request": request})
        return Response(output.data, status=status.HTTP_201_CREATED)


class StudyDetailApi(APIView):
    @extend_schema(responses=StudyOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        study = study_get_for_user(user=request.user, study_id=pk)
        return Response(StudyOutputSerializer(study, context={"request": request}).data)


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
        study = study_get_for_user(user=request.user, study_id=pk)
        size = params.validated_data.get("size")
        if size:
            response = HttpResponse(
                display_image(study.image.path, max_side=size, image_format="JPEG"), content_type="image/jpeg"
            )
        elif study.image.name.endswith(".dcm"):
            response = HttpResponse(display_image(study.image.path), content_type="image/png")
        else:
            response = FileResponse(study.image.open("rb"))
        patch_cache_control(response, private=True, max_age=24 * 3600)  # a study's image never changes
        return response


class StudyHeatmapApi(APIView):
    """The Grad-CAM overlay of the latest prediction."""

    @extend_schema(responses={(200, "image/jpeg"): bytes})
    def get(self, request: Request, pk: int) -> FileResponse:
        prediction = study_latest_prediction(study_get_for_user(user=request.user, study_id=pk))
        if prediction is None or not prediction.heatmap:
            raise Http404("This study has no heatmap.")
        return FileResponse(prediction.heatmap.open("rb"))


class ReviewCreateApi(APIView):
    """A reviewer confirms or corrects the prediction; the latest review is the study's label."""

    permission_classes = [IsReviewer]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewInput"

        label = serializers.ChoiceField(choices=Label.choices)
        comment = serializers.CharField(required=False, allow_blank=True, max_length=5000)

    @extend_schema(request=InputSerializer, responses={201: ReviewOutputSerializer})
    def post(self, request: Request, pk: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = study_get_for_user(user=request.user, study_id=pk)
        review = review_submit(study=study, reviewer=request.user, **serializer.validated_data)
        return Response(ReviewOutputSerializer(review).data, status=status.HTTP_201_CREATED)
