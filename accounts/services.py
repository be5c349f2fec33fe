"""Writes of accounts: API tokens."""

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser) -> tuple[AuthToken, str]:
    """A new API token for ``user`` (the object and the token string, shown once); the user's expired
    tokens are deleted (accounts.authentication.TokenAuthentication does not sweep them per request)."""
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    return AuthToken.objects.create(user=user)
