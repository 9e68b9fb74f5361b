"""The test database: a PostgreSQL 15 server started for the session, or SQLite.

``GREENLIGHT_TEST_DATABASE`` chooses: ``postgresql`` (the default, as production runs)
starts a throwaway server (``tests.servers.postgres_server``) and points ``DATABASE_URL`` at
it; ``sqlite`` runs on a SQLite file, as ``make run`` does. pytest-django reads the settings
before any conftest is imported, so this module is a plugin that pyproject's addopts loads
with ``-p``; its hook runs before pytest-django's. The server stops when the session ends.

While the tests run on PostgreSQL, ``GREENLIGHT_TEST_POSTGRES`` holds the URL of the
server's ``postgres`` database: a stack started by a test gets its own database there.

With pytest-xdist (``-n``) the controller starts the one server and its workers share it,
each on its own test database.

It also keeps a failure's report from ending the run: CPython 3.11's parser can raise
SystemError ("AST constructor recursion depth mismatch") when pytest parses a traceback's
source while a test's threads parse too; that report is then written as a native traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Generator

import psycopg
import pytest
from django.db import connection

DATABASES = ("postgresql", "sqlite")
# The database Django's settings name; pytest-django creates and drops test_<name> beside it.
DATABASE_NAME = "greenlight"
SERVER_URL_ENV = "GREENLIGHT_TEST_POSTGRES"


def chosen_database() -> str:
    """The database the tests run on, from ``GREENLIGHT_TEST_DATABASE``."""
    choice = os.environ.get("GREENLIGHT_TEST_DATABASE", "postgresql").strip().lower()
    if choice not in DATABASES:
        raise pytest.UsageError(
            f"GREENLIGHT_TEST_DATABASE must be one of {', '.join(DATABASES)}, got {choice!r}"
        )
    return choice


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Point the settings at the chosen database before pytest-django loads them."""
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(SERVER_URL_ENV):
        # A pytest-xdist worker: the controller started the server and named it in the
        # environment the worker inherited; pytest-django gives each worker its own
        # test_greenlight_gw<N> database there.
        return
    # A DATABASE_URL of the shell (a production or development server) is never the tests'.
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop(SERVER_URL_ENV, None)
    options = early_config.known_args_namespace
    if chosen_database() != "postgresql" or options.help or options.version:
        return
    # tests.servers imports the dashboard package, whose Celery module sets a default
    # DJANGO_SETTINGS_MODULE; pytest-django must still find the one pyproject names.
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
    from tests.servers import database_url, postgres_server

    if settings_module is None:
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    servers = contextlib.ExitStack()
    server = servers.enter_context(postgres_server())
    # Closing twice is harmless: the cleanup runs at the end of the session, and atexit
    # covers a run that stops while it is still being configured.
    early_config.add_cleanup(servers.close)
    atexit.register(servers.close)
    url = str(server.extra["url"])
    os.environ[SERVER_URL_ENV] = url
    os.environ["DATABASE_URL"] = database_url(url, DATABASE_NAME)


def end_other_sessions() -> None:
    """End every session on the test database but this thread's, which Django closes itself.

    Threads of the tests (consumers' database_sync_to_async, servers run in a thread) leave
    their connections open; PostgreSQL refuses to drop a database that has sessions.
    """
    server_url = os.environ.get(SERVER_URL_ENV)
    if not server_url:
        return
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [connection.settings_dict["NAME"]],
        )


def pytest_report_header(config: pytest.Config) -> str:
    """Name the database in pytest's header."""
    if SERVER_URL_ENV in os.environ:
        return "database: PostgreSQL 15, started for this session"
    return "database: SQLite"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A report whose traceback pytest could not format gets a native traceback instead."""
    try:
        return (yield)
    except SystemError:
        style = item.config.option.tbstyle
        item.config.option.tbstyle = "native"
        try:
            return pytest.TestReport.from_item_and_call(item, call)
        finally:
            item.config.option.tbstyle = style
