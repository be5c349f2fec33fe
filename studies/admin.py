from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from studies.audit import request_address
from studies.deidentify import notes_check, patient_ref_check
from studies.models import AccessEvent, Label, Patient, Prediction, Review, Site, SiteMembership, Study
from studies.selectors import study_annotate_labels
from studies.services import review_confirm, review_submit, study_delete, study_release, study_requeue
from studies.sites import user_is_site_lead, user_leads_site, user_site_ids

THUMBNAIL_PX = 64
PREVIEW_PX = 360


class ReviewedFilter(admin.SimpleListFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Study]) -> QuerySet[Study]:
        if self.value() in ("yes", "no"):
            return queryset.filter(is_reviewed=self.value() == "yes")
        return queryset


class PredictedLabelFilter(admin.SimpleListFilter):
    title = "predicted label"
    parameter_name = "predicted_label"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(Label.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Study]) -> QuerySet[Study]:
        if self.value() in Label.values:
            return queryset.filter(predicted_label=self.value())
        return queryset


def _report(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Study],
    change: Callable[[Study], object],
    done: str,
) -> None:
    """Apply a service to each study; count the successes and show each refusal."""
    count = 0
    for study in queryset:
        try:
            change(study)
        except ValidationError as error:
            for text in error.messages:
                modeladmin.message_user(request, f"{study}: {text}", level=messages.ERROR)
        except PermissionDenied as refusal:  # e.g. the admin's own upload: the rest of the selection goes on
            modeladmin.message_user(request, f"{study}: {refusal}", level=messages.ERROR)
        else:
            count += 1
    if count:
        modeladmin.message_user(request, f"{done}: {count} {'study' if count == 1 else 'studies'}.")


@admin.action(description="Confirm prediction")
def confirm_prediction(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Study]) -> None:
    _report(
        modeladmin,
        request,
        queryset,
        lambda study: review_confirm(study=study, reviewer=request.user, address=request_address(request)),
        "Prediction confirmed",
    )


def _set_label_action(label: Label) -> Callable[[admin.ModelAdmin, HttpRequest, QuerySet[Study]], None]:
    def set_label(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        _report(
            modeladmin,
            request,
            queryset,
            lambda study: review_submit(
                study=study, reviewer=request.user, label=label.value, address=request_address(request)
            ),
            f"Labelled {label.label}",
        )

    set_label.__name__ = f"set_label_{label.value}"
    return admin.action(description=f"Set label to {label.label}")(set_label)


@admin.action(description="Release held study (pixels checked: no identifying text)")
def release_held(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Study]) -> None:
    _report(
        modeladmin,
        request,
        queryset,
        lambda study: study_release(study=study, user=request.user, address=request_address(request)),
        "Released for prediction",
    )


@admin.action(description="Re-run prediction")
def rerun_prediction(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Study]) -> None:
    _report(modeladmin, request, queryset, lambda study: study_requeue(study=study), "Sent for prediction")


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Study | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Study | None = None) -> bool:
        return False


class PredictionInline(ReadOnlyInline):
    model = Prediction
    fields = ["model_version", "label", "confidence", "probabilities", "inference_ms", "created_at"]
    readonly_fields = fields


class ReviewInline(ReadOnlyInline):
    model = Review
    fields = ["label", "reviewer", "comment", "created_at"]
    readonly_fields = fields


def _field_checked(check: Callable[[str], str], value: str) -> str:
    """A service's check of one field, its ValidationError as the form field's own."""
    try:
        return check(value)
    except ValidationError as error:
        raise ValidationError(error.messages) from error


class StudyAdminForm(forms.ModelForm):
    """The notes get the check the API's upload gives them: no identifiers."""

    class Meta:
        model = Study
        fields = ["view", "notes"]  # what StudyAdmin leaves editable

    def clean_notes(self) -> str:
        return _field_checked(notes_check, self.cleaned_data["notes"])


class PatientAdminForm(forms.ModelForm):
    """A patient's key stays a pseudonym, as the API requires."""

    class Meta:
        model = Patient
        fields = ["site", "ref"]

    def clean_ref(self) -> str:
        return _field_checked(patient_ref_check, self.cleaned_data["ref"])


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    form = StudyAdminForm
    list_display = [
        "id",
        "thumbnail",
        "uploaded_at",
        "source",
        "status",
        "predicted_label",
        "confidence",
        "final_label",
        "reviewed",
    ]
    list_display_links = ["id", "thumbnail"]
    list_filter = [ReviewedFilter, PredictedLabelFilter, "status", "source"]
    search_fields = ["=id", "patient__ref"]
    date_hierarchy = "uploaded_at"
    actions = [
        confirm_prediction,
        *(_set_label_action(label) for label in Label),
        rerun_prediction,
        release_held,
    ]
    inlines = [PredictionInline, ReviewInline]

    class Media:
        css = {"all": ["studies/admin.css"]}  # no inline style: the Content-Security-Policy forbids it

    fields = [
        "preview",
        "patient",
        "view",
        "source",
        "notes",
        "status",
        "error",
        "image",
        "sha256",
        "width",
        "height",
        "uploaded_by",
        "uploaded_at",
        "status_changed_at",
    ]
    readonly_fields = [
        "preview",
        "patient",
        "source",  # the site's slug: blinding, reads required and per-source results read it
        "status",
        "error",
        "image",
        "sha256",
        "width",
        "height",
        "uploaded_by",
        "uploaded_at",
        "status_changed_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Study]:
        """The studies of the user's own sites (every site for a superuser), as everywhere else."""
        studies = super().get_queryset(request)
        if not request.user.is_superuser:
            studies = studies.filter(site_id__in=user_site_ids(request.user))
        return study_annotate_labels(studies).select_related("patient")

    def has_delete_permission(self, request: HttpRequest, obj: Study | None = None) -> bool:
        """Site leads of the study's site and superusers (study_delete's rule), with the admin's own permission."""
        if not super().has_delete_permission(request, obj):
            return False
        return user_is_site_lead(request.user) if obj is None else user_leads_site(request.user, obj.site_id)

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple:
        """Reads and predictions go with their study (its deletion is audited), though neither is deleted alone."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, perms_needed - {Review._meta.verbose_name, Prediction._meta.verbose_name}, protected

    def save_model(self, request: HttpRequest, obj: Study, form: forms.ModelForm, change: bool) -> None:
        """Only what the form changed (view, notes): a full save would write back the status, its time and the
        rendition read when the form was opened, over what a prediction batch recorded meanwhile."""
        obj.save(update_fields=form.changed_data if change else None)

    def delete_model(self, request: HttpRequest, obj: Study) -> None:
        # The files go too, once the deletion is committed; a frozen snapshot keeps a withdrawn case.
        study_delete(study=obj, user=request.user, address=request_address(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:  # the confirmation page already refused studies of sites the user does not lead
            study_delete(study=study, user=request.user, address=request_address(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # studies come in through the upload API, which checks the image

    def _image(self, study: Study, size: int) -> str:
        return format_html(
            '<img src="{}" width="{}" height="{}" alt="Study {}" loading="lazy" class="study-image">',
            f"{reverse('api:study-image', kwargs={'pk': study.pk})}?size={2 * size}",
            size,
            size,
            study.pk,
        )

    @admin.display(description="image")
    def thumbnail(self, study: Study) -> str:
        return self._image(study, THUMBNAIL_PX)

    @admin.display(description="image")
    def preview(self, study: Study) -> str:
        return self._image(study, PREVIEW_PX)

    @admin.display(description="predicted", ordering="predicted_label")
    def predicted_label(self, study: Study) -> str:
        return Label(study.predicted_label).label if study.predicted_label else "—"

    @admin.display(ordering="predicted_confidence")
    def confidence(self, study: Study) -> str:
        return f"{study.predicted_confidence:.3f}" if study.predicted_confidence is not None else "—"

    @admin.display(description="final label", ordering="final_label")
    def final_label(self, study: Study) -> str:
        return Label(study.final_label).label if study.final_label else "—"

    @admin.display(boolean=True, ordering="is_reviewed")
    def reviewed(self, study: Study) -> bool:
        return study.is_reviewed


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    form = PatientAdminForm
    list_display = ["ref", "split", "study_count", "created_at"]
    list_filter = ["split"]
    search_fields = ["ref"]
    readonly_fields = ["split", "created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Patient]:
        patients = super().get_queryset(request)
        if not request.user.is_superuser:
            patients = patients.filter(site_id__in=user_site_ids(request.user))
        return patients.annotate(study_count=Count("studies"))

    @admin.display(description="studies", ordering="study_count")
    def study_count(self, patient: Patient) -> int:
        return patient.study_count


class ViewOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: visible in the admin, never edited there."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Prediction)
class PredictionAdmin(ViewOnlyAdmin):
    list_display = ["id", "study", "label", "confidence", "model_version", "inference_ms", "created_at"]
    list_filter = ["label", "model_version"]
    list_select_related = ["study", "model_version"]
    search_fields = ["=study__id"]


@admin.register(AccessEvent)
class AccessEventAdmin(ViewOnlyAdmin):
    """The access audit trail: read-only, never deleted from the admin."""

    list_display = ["at", "username", "action", "study_id_ref", "site", "detail", "address"]
    list_filter = ["action", "site"]
    list_select_related = ["site"]
    search_fields = ["username", "=study_id_ref"]
    date_hierarchy = "at"

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Review)
class ReviewAdmin(ViewOnlyAdmin):
    list_display = ["id", "study", "label", "reviewer", "created_at"]
    list_filter = ["label"]
    list_select_related = ["study", "reviewer"]
    search_fields = ["=study__id", "reviewer__username"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # reads and adjudications are the study's record; send a study back instead


class SiteMembershipInline(admin.TabularInline):
    model = SiteMembership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    """The admin-managed list of sites: a study's ``source`` is its site's slug."""

    list_display = ["name", "slug", "reads_required", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [SiteMembershipInline]


@admin.register(SiteMembership)
class SiteMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "site", "role", "created_at"]
    list_filter = ["role", "site"]
    search_fields = ["user__username", "site__name"]
    autocomplete_fields = ["user", "site"]
