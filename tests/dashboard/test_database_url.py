"""DATABASE_URL: PostgreSQL from a URL, SQLite without one, and a clear error for a bad one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from dashboard.settings import _database


def test_it_reads_every_part_of_a_postgresql_url() -> None:
    database = _database("postgresql://green%40light:p%3Ass%2Fw@db.example.com:6432/green%20db")

    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["USER"], database["PASSWORD"]) == ("green@light", "p:ss/w")
    assert (database["HOST"], database["PORT"], database["NAME"]) == (
        "db.example.com",
        "6432",
        "green db",
    )
    assert database["CONN_HEALTH_CHECKS"] is True


def test_it_uses_sqlite_without_a_url() -> None:
    assert _database(None)["ENGINE"] == "django.db.backends.sqlite3"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@h/db", "must start with postgres:// or postgresql://, got mysql://"),
        ("postgres://u:p@h:5432/", "must name the database"),
        ("postgres://u:secret@h:port/db", "port must be a number from 1 to 65535, got h:port"),
        ("postgres://u:secret@h:70000/db", "got h:70000"),
    ],
)
def test_it_refuses_a_bad_url_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message) as refused:
        _database(url)
    assert "secret" not in str(refused.value)
