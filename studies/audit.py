"""The access audit trail: every view of an image or heatmap, every dataset export and every study
deletion is one AccessEvent row (user, action, study id or snapshot, address, time)."""

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest

from studies.models import AccessEvent


def access_record(
    *, user: AbstractBaseUser | None, action: str, study_id: int | None = None, detail: str = "", address: str = ""
) -> AccessEvent:
    """Write one audit row. Never a patient identifier: study ids, snapshot ids, sizes."""
    event = AccessEvent(
        user=user if user is not None and user.is_authenticated else None,
        username=getattr(user, "username", "") or "(system)",  # a command or a task, not a person
        action=action,
        study_id_ref=study_id,
        detail=detail[:200],
        address=address or None,
    )
    event.full_clean(exclude=["user"])
    event.save()
    return event


def request_address(request: HttpRequest) -> str:
    """The client address as the web server saw it (behind a proxy, configure it to set REMOTE_ADDR)."""
    return request.META.get("REMOTE_ADDR", "")
