from rest_framework.permissions import BasePermission

from studies.selectors import user_can_upload, user_is_adjudicator, user_is_reviewer


class IsReviewer(BasePermission):
    message = "Only reviewers (or staff) may review studies."

    def has_permission(self, request, view) -> bool:
        return user_is_reviewer(request.user)


class CanUpload(BasePermission):
    message = "Only uploaders, reviewers or staff may upload studies."

    def has_permission(self, request, view) -> bool:
        return request.method != "POST" or user_can_upload(request.user)


class IsAdjudicator(BasePermission):
    message = "Only adjudicators (or staff) may do this."

    def has_permission(self, request, view) -> bool:
        return user_is_adjudicator(request.user)
