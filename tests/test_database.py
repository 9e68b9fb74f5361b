"""The tests run on the database the run asked for: PostgreSQL 15 by default, or SQLite."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.dbplugin import chosen_database

pytestmark = pytest.mark.both_databases


def test_it_runs_on_the_database_the_run_chose(db: None) -> None:
    assert connection.vendor == chosen_database()


def test_it_runs_on_postgresql_15_or_later_unless_sqlite_was_chosen(db: None) -> None:
    if chosen_database() == "sqlite":
        assert connection.vendor == "sqlite"
        return
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        (version,) = cursor.fetchone()
    assert int(version) >= 150000
