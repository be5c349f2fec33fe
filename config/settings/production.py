"""Production: PostgreSQL, Redis, secrets from the environment with no defaults."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

SECRET_KEY = env("SECRET_KEY")  # no default: a missing key fails at start
DEIDENTIFICATION_KEY = env("DEIDENTIFICATION_KEY")  # no default: pseudonyms must not depend on the secret key
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
CELERY_BROKER_URL = env("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
# No demo accounts and no printed or stored passwords (see training/management/commands/bootstrap.py).
DEMO_USERS = env.bool("DEMO_USERS", default=False)
OPEN_SITES = env.bool("OPEN_SITES", default=False)

# X-Forwarded-Proto is trusted only from the configured proxy: gunicorn takes the scheme from it for the addresses
# in FORWARDED_ALLOW_IPS alone. TRUST_X_FORWARDED_PROTO makes Django read the header from any client: only behind a
# server that is not gunicorn, every request passing a proxy that overwrites the header.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("TRUST_X_FORWARDED_PROTO", default=False) else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
