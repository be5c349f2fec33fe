"""Browser tests: Playwright drives Debian's chromium against Django's live server.

Playwright's own browser download cannot reach the internet here, so the system executable is
launched (CHROMIUM overrides the path). Screenshots of failing tests land in var/test-results
(``--screenshot only-on-failure --output``, set in pyproject.toml)."""

import os
import shutil

import pytest

# The live server and the ORM calls made by a test run beside Playwright's event loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--no-sandbox"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 860}}


@pytest.fixture
def login(live_server, context):
    """Log a user into the browser context through a real session cookie."""
    from django.conf import settings
    from django.test import Client

    def _login(user):
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url}])
        return user

    return _login
