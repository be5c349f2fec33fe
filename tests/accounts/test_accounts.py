"""Accounts: expiring API tokens that die with a password change, login lockout, a working-day session."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken

from tests.factories import reviewer

pytestmark = pytest.mark.django_db
TOKEN_URL = "/api/auth/token/"
PASSWORD = "pass-word-123"  # the factories' password


def _token(client, username: str, password: str = PASSWORD):
    return client.post(TOKEN_URL, {"username": username, "password": password})


def test_a_token_carries_its_expiry_and_authenticates_until_then(api_client, settings):
    user = reviewer()

    response = _token(api_client, user.username)

    assert response.status_code == 200
    body = response.json()
    expiry = timezone.datetime.fromisoformat(body["expiry"])
    assert timedelta(hours=9) < expiry - timezone.now() <= settings.REST_KNOX["TOKEN_TTL"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert api_client.get("/api/studies/").status_code == 200


def test_an_expired_token_is_refused_with_401(api_client):
    user = reviewer()
    token = _token(api_client, user.username).json()["token"]
    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    assert api_client.get("/api/studies/").status_code == 401


def test_a_users_expired_tokens_are_deleted_at_their_next_login(api_client):
    user = reviewer()
    _token(api_client, user.username)
    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))

    token = _token(api_client, user.username).json()["token"]

    assert AuthToken.objects.filter(user=user).count() == 1
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get("/api/studies/").status_code == 200


def test_a_password_change_ends_every_api_token_of_the_user(api_client):
    user = reviewer()
    tokens = [_token(api_client, user.username).json()["token"] for _ in range(2)]

    user.set_password("another-pass-word-456")
    user.save()

    assert not AuthToken.objects.filter(user=user).exists()
    for token in tokens:
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert api_client.get("/api/studies/").status_code == 401


def test_after_too_many_wrong_passwords_even_the_right_one_is_refused_with_429(api_client, settings):
    user = reviewer()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _token(api_client, user.username, "wrong").status_code == 400

    last_failure = _token(api_client, user.username, "wrong")
    right_password = _token(api_client, user.username)

    assert last_failure.status_code == 429 and right_password.status_code == 429
    assert right_password.json() == {
        "detail": "Too many failed logins: this account is locked from your address for 15 minutes."
    }
    assert not AuthToken.objects.exists()


def test_the_lockout_is_per_username_and_address(api_client, settings):
    locked, other = reviewer(), reviewer()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _token(api_client, locked.username, "wrong")

    assert _token(api_client, other.username).status_code == 200
    assert _token(api_client, locked.username, PASSWORD).status_code == 429
    from_elsewhere = api_client.post(
        TOKEN_URL, {"username": locked.username, "password": PASSWORD}, REMOTE_ADDR="10.0.0.9"
    )
    assert from_elsewhere.status_code == 200


def test_the_login_page_locks_out_too(client, settings):
    user = reviewer()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": user.username, "password": "wrong"})

    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})

    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()


def test_a_login_session_lasts_a_working_day(client):
    user = reviewer()

    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})

    assert response.status_code == 302
    assert response.cookies["sessionid"]["max-age"] == 8 * 3600
