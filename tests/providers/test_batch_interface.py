"""The batch interface's own helpers: stable request ids and streamed lines."""

from __future__ import annotations

import re

from providers.batch import custom_id, jsonl_lines


def test_custom_ids_are_stable_unique_and_in_the_allowed_alphabet() -> None:
    ids = {custom_id(job, index) for job in (1, 12, 123_456_789) for index in range(50_000)}
    assert len(ids) == 3 * 50_000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    assert custom_id(7, 3) == custom_id(7, 3)


def test_lines_come_whole_whatever_the_chunks() -> None:
    body = b'{"a": 1}\n{"b": 2}\n\n{"c": 3}'
    for size in (1, 2, 3, 7, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert list(jsonl_lines(chunks)) == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']


def test_a_long_line_in_many_chunks_is_read_in_linear_time() -> None:
    piece = b"x" * 1024
    lines = list(jsonl_lines([piece] * 20_000 + [b"\n", b"tail"]))  # a 20 MB line
    assert [len(line) for line in lines] == [20_000 * 1024, 4]
