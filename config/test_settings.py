"""Settings for the test suite (and the worker processes and benchmarks it
starts): the production settings with a development encryption key, plain
static files, a fast password hasher and a test database per process.

SQLite: an in-memory database by default, fast and private to each pytest-xdist
worker. Tests whose database other connections use too (a real qcluster
process, threads) need a file; tests/conftest.py switches to
``TEST_DATABASE_FILE`` when the session selects any of them.
"""

from __future__ import annotations

import os
import tempfile

# Before the settings read it: DEBUG may be off in tests, and a real key is not needed.
os.environ.setdefault("SECRET_KEY", "test-settings-only-key-" + "x" * 40)

from .settings import *  # noqa: E402, F403
from .settings import DATABASES, Q_CLUSTER, STORAGES  # noqa: E402

TESTING = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

#: Where a shared SQLite test database lives: one per test process,
#: so parallel runs in one checkout never share it.
TEST_DATABASE_FILE = os.path.join(tempfile.gettempdir(), f"ljd-test-{os.getpid()}.sqlite3")
if DATABASES["default"]["ENGINE"] == "config.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}
else:
    # One test database per test process, so parallel runs on one server never
    # collide (pytest-xdist adds its worker name to this).
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

#: One queue per test process: parallel test processes (pytest-xdist workers)
#: on one Redis must not take each other's tasks. A worker process started by
#: a test is given its test process's name (tests/workers.py).
Q_CLUSTER["name"] = os.environ.get("DASHBOARD_QUEUE_NAME") or f"test-{os.getpid()}"
