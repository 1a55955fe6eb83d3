"""Django's SQLite backend with SQLite's real parameter limit.

Django assumes SQLite's historic cap of 999 parameters a statement and splits
bulk inserts and updates into batches of about a hundred rows; SQLite 3.32 and
later take 32,766. With the real limit a poll round or a flush of a thousand
items is one statement on SQLite as on PostgreSQL."""

from __future__ import annotations

import sqlite3

from django.db.backends.sqlite3 import base, features

MODERN = sqlite3.sqlite_version_info >= (3, 32)


class DatabaseFeatures(features.DatabaseFeatures):
    max_query_params = 32766 if MODERN else 999


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures
