"""Logins and failed logins in the audit trail (studies.audit), from Django's own signals: the login page and
the admin send them, and so does the API token endpoint (accounts.apis), as knox's own login view does."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest

from studies.audit import access_record, request_address
from studies.models import AccessEvent


def login_record(sender: type, request: HttpRequest | None, user: AbstractBaseUser, **kwargs: object) -> None:
    """user_logged_in: who, from where, through which path (login page, admin, token endpoint)."""
    access_record(user=user, action=AccessEvent.Action.LOGIN, detail=_path(request), address=request_address(request))


def login_failed_record(sender: str, credentials: dict, request: HttpRequest | None = None, **kwargs: object) -> None:
    """user_login_failed: the username tried (the password is never in ``credentials``), from where, where."""
    access_record(
        user=None,
        action=AccessEvent.Action.LOGIN_FAILED,
        username=str(credentials.get(get_user_model().USERNAME_FIELD, "")),
        detail=_path(request),
        address=request_address(request),
    )


def _path(request: HttpRequest | None) -> str:
    return request.path if request is not None else ""
