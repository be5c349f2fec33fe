from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts: API tokens, login lockout"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from accounts.audit import login_failed_record, login_record

        # Django's only hook on every login path (login page, admin, token endpoint): the audit trail.
        user_logged_in.connect(login_record, dispatch_uid="accounts.audit.login")
        user_login_failed.connect(login_failed_record, dispatch_uid="accounts.audit.login_failed")
