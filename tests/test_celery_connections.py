"""Workers keep their database connection between tasks and drop a broken or old one, as web requests do."""

from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup

from config.celery import app, database_connections_checked


def test_celery_no_longer_closes_the_connection_around_every_task():
    fixup = DjangoWorkerFixup(app)
    closed = []
    fixup._close_database = lambda: closed.append(True)
    for _ in range(100):
        fixup.on_task_prerun(sender=SimpleNamespace(request=SimpleNamespace(is_eager=False)))
        fixup.on_task_postrun(sender=SimpleNamespace(request=SimpleNamespace(is_eager=False)))
    assert closed == []


@pytest.mark.parametrize("eager, checked", [(False, True), (True, False)])
def test_before_each_task_broken_and_old_connections_are_closed(monkeypatch, eager, checked):
    calls = []
    monkeypatch.setattr("django.db.close_old_connections", lambda: calls.append(True))
    database_connections_checked(task=SimpleNamespace(request=SimpleNamespace(is_eager=eager)))
    assert calls == ([True] if checked else [])


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_no_longer_answers_is_replaced_before_the_next_task(monkeypatch):
    """A database restarted while the worker waited: the task's first query must not be the one that fails."""
    from django.db import connections

    connection = connections["default"]
    connection.ensure_connection()
    dead = connection.connection
    monkeypatch.setattr(type(connection), "is_usable", lambda self: self.connection is not dead)
    database_connections_checked(task=SimpleNamespace(request=SimpleNamespace(is_eager=False)))
    connection.ensure_connection()
    assert connection.connection is not None and connection.connection is not dead
