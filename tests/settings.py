"""Settings for the test suite: the project's settings on the database tests.dbplugin chose.

DATABASE_URL names the session's PostgreSQL server (pytest-django creates test_greenlight
on it); without it the test database is a SQLite file.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "greenlight-tests-only")

from dashboard.settings import *  # noqa: E402,F403
from dashboard.settings import DATABASES  # noqa: E402

# A file, not :memory:, so that worker subprocesses started by integration tests share it.
_TEST_DB_DIR = tempfile.mkdtemp(prefix="greenlight-testdb-")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(_TEST_DB_DIR, "test.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# collectstatic never runs for tests; whitenoise serves from the finders instead.
STATIC_ROOT = os.path.join(_TEST_DB_DIR, "staticfiles")
os.makedirs(STATIC_ROOT, exist_ok=True)
