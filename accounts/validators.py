"""API tokens die with a password change.

Django calls ``password_changed`` on every configured password validator whenever a user's password
is set and saved (set_password + save: the password-change page, the admin, ``changepassword``), so
this validator is the one place that sees every change. It validates nothing itself."""

from django.contrib.auth.models import AbstractBaseUser


class RevokeApiTokensOnPasswordChange:
    def validate(self, password: str, user: AbstractBaseUser | None = None) -> None:
        return None

    def password_changed(self, password: str, user: AbstractBaseUser | None = None) -> None:
        if user is not None and user.pk is not None:
            from knox.models import AuthToken

            AuthToken.objects.filter(user=user).delete()

    def get_help_text(self) -> str:
        return "Changing your password ends your API tokens."
