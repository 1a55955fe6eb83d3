"""``UPDATE … RETURNING``: a conditional update that says which rows it moved.

Django's ``QuerySet.update()`` answers with a row count only. A writer that
moves many rows at once and must act on exactly the rows it moved (announce
them, write their events) either reads them back, which races with other
writers, or asks the database to return them from the statement itself.
SQLite (3.35 and later) and PostgreSQL both speak ``RETURNING``; the statement
is compiled by Django's own update compiler, so expressions (``F``, ``Case``,
``Subquery``) work as in ``update()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.sql import UpdateQuery


def update_returning(
    queryset: QuerySet[Any], values: dict[str, Any], returning: Sequence[str]
) -> list[dict[str, Any]]:
    """Run ``queryset.update(**values)`` and return, for every row it changed,
    the model fields named in ``returning`` as they are after the update."""
    model = queryset.model
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    query.annotations = {}
    compiler = query.get_compiler(queryset.db)
    compiler.pre_sql_setup()
    sql, params = compiler.as_sql()
    if not sql:
        return []
    connection = connections[queryset.db]
    fields = [model._meta.get_field(name) for name in returning]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {columns}", params)
        rows = cursor.fetchall()
    cols = [field.get_col(model._meta.db_table) for field in fields]
    converters = [
        connection.ops.get_db_converters(col) + col.get_db_converters(connection) for col in cols
    ]
    answers = []
    for row in rows:
        answer = {}
        for field, col, value, col_converters in zip(fields, cols, row, converters, strict=True):
            for convert in col_converters:
                value = convert(value, col, connection)
            answer[field.name] = value
        answers.append(answer)
    return answers
