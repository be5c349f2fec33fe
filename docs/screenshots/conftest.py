"""The suite's fixtures (media root, users, the browser on the system chromium)."""

from tests.browser.conftest import *  # noqa: F403
from tests.conftest import *  # noqa: F403
