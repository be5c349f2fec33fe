"""One short DRF permission class per rule; the rules themselves live in studies.sites."""

from rest_framework.permissions import BasePermission

from studies.sites import user_can_upload, user_has_role, user_is_adjudicator, user_is_reviewer, user_is_site_lead


class HasRole(BasePermission):
    """The default for every API view: a login is not enough, the account needs a role."""

    message = "Your account has no role: an administrator must add you to a site or grant you a permission."

    def has_permission(self, request, view) -> bool:
        return user_has_role(request.user)


class IsReviewer(BasePermission):
    message = "Only reviewers or site leads may review studies."

    def has_permission(self, request, view) -> bool:
        return user_is_reviewer(request.user)


class CanUpload(BasePermission):
    message = "Only uploaders, reviewers or site leads of a site may upload studies."

    def has_permission(self, request, view) -> bool:
        return request.method != "POST" or user_can_upload(request.user)


def has_perm(perm: str, message: str) -> type[BasePermission]:
    """A permission class requiring one Django permission (granted to a group, not ``is_staff``)."""

    class HasPerm(BasePermission):
        def has_permission(self, request, view) -> bool:
            return bool(request.user.is_authenticated and request.user.has_perm(perm))

    HasPerm.message = message
    HasPerm.__name__ = f"HasPerm_{perm.replace('.', '_')}"
    return HasPerm


CanPromote = has_perm("training.promote_modelversion", "You need the permission to promote model versions.")
CanTrain = has_perm("training.start_trainingrun", "You need the permission to start training runs.")
CanExport = has_perm("training.export_datasetsnapshot", "You need the permission to export datasets.")


class IsAdjudicator(BasePermission):
    message = "Only adjudicators (or staff) may do this."

    def has_permission(self, request, view) -> bool:
        return user_is_adjudicator(request.user)


class IsSiteLead(BasePermission):
    message = "Only site leads (for the sites they lead) and superusers read the audit trail."

    def has_permission(self, request, view) -> bool:
        return user_is_site_lead(request.user)
