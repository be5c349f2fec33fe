import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
application = get_wsgi_application()
# Import the URL configuration, and with it every view, serializer and DRF module, now rather than on
# each process's first request: with gunicorn's preload_app the workers fork with it loaded (each paid
# ~0.3 s of CPU on its first request, 1-2 ms an upload over bench/throughput.py's 200).
get_resolver().url_patterns  # noqa: B018 - a cached property, read for its import
