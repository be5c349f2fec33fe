from django.http import HttpRequest

from studies.selectors import user_can_upload, user_is_adjudicator, user_is_reviewer
from studies.sites import user_is_site_lead


def navigation(request: HttpRequest) -> dict[str, bool]:
    """What the header shows to this user."""
    return {
        "is_reviewer": user_is_reviewer(request.user),
        "is_adjudicator": user_is_adjudicator(request.user),
        "can_upload": user_can_upload(request.user),
        "is_site_lead": user_is_site_lead(request.user),
    }
