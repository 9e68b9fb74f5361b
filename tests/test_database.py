"""The tests run on the database the run asked for (PostgreSQL 15 by default, or SQLite), and
the stacks they start run on it too."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from django.db import connection

from deployer.models import App
from tests.dbplugin import chosen_database
from tests.servers import REPO, shared_database_env, stack_database

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


def test_a_subprocess_of_a_stack_shares_the_test_database(transactional_db: None) -> None:
    App.objects.create(name="shared", image="demo/hello:1", frontend="shared.localhost")
    env = {**os.environ, **shared_database_env(), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    script = (
        "import django; django.setup(); "
        "from django.db import connection; from deployer.models import App; "
        "print(connection.vendor, App.objects.filter(name='shared').count())"
    )

    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [chosen_database(), "1"]


def test_a_whole_stack_gets_a_database_of_its_own_on_postgresql(db: None) -> None:
    url = stack_database()
    if chosen_database() == "sqlite":
        assert url is None  # the stack keeps its SQLite file under its var dir
        return
    assert url is not None
    with psycopg.connect(url, connect_timeout=10) as own:
        name = own.execute("SELECT current_database()").fetchone()
        tables = own.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert name is not None and name[0] != connection.settings_dict["NAME"]
        assert tables.fetchone() == (0,)
