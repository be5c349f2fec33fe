"""API token authentication: django-rest-knox's, with one query per request instead of two."""

from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox import auth
from knox.models import AuthToken
from knox.signals import token_expired


class TokenAuthentication(auth.TokenAuthentication):
    """knox's token check. knox also reads all of the user's tokens on every request to delete the
    expired ones (a second query each time); here an expired token is refused and deleted when it is
    presented, as before, and the user's other expired tokens go at their next login (api_token_create)."""

    def _cleanup_token(self, auth_token: AuthToken) -> bool:
        if auth_token.expiry is None or auth_token.expiry >= timezone.now():
            return False
        username = auth_token.user.get_username()
        auth_token.delete()
        token_expired.send(sender=self.__class__, username=username, source="auth_token")
        return True


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of knox's tokens, for this subclass (drf-spectacular matches the class)."""

    target_class = "accounts.authentication.TokenAuthentication"
