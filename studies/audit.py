"""The audit trail: uploads and imports, views of images and heatmaps, reads, adjudications, rejections and
send-backs, releases of held studies, dataset exports, study deletions, changes of the active model, logins and
failed logins; each is one AccessEvent row (user, action, study and its site, address, time)."""

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest

from studies.models import AccessEvent, Study


def access_record(
    *,
    user: AbstractBaseUser | None,
    action: str,
    study: Study | None = None,
    detail: str = "",
    address: str = "",
    username: str = "",
) -> AccessEvent:
    """Write one audit row. Never a patient identifier: study, snapshot and model ids, labels, sizes.

    ``username`` names who tried when there is no user (a failed login); without either the row says
    "(system)": a command or a task, not a person."""
    event = AccessEvent(
        user=user if user is not None and user.is_authenticated else None,
        username=(getattr(user, "username", "") or username or "(system)")[:150],
        action=action,
        study_id_ref=study.pk if study is not None else None,
        site_id=study.site_id if study is not None else None,
        detail=detail[:200],
        address=address or None,
    )
    event.full_clean(exclude=["user", "site"])
    event.save()
    return event


def request_address(request: HttpRequest | None) -> str:
    """The client address as the web server saw it (behind a proxy, configure it to set REMOTE_ADDR)."""
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""
