"""The batch interface's own helpers: stable request ids and streamed lines."""

from __future__ import annotations

import re
from collections.abc import Iterator

from providers.batch import (
    LINE_HEAD_BYTES,
    LongLine,
    bounded_lines,
    custom_id,
    custom_id_in,
    jsonl_lines,
)


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


def test_bounded_lines_come_whole_whatever_the_chunks() -> None:
    body = b'{"a": 1}\n{"b": 2}\n\n{"c": 3}'
    for size in (1, 2, 3, 7, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert list(bounded_lines(chunks, 100)) == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']


def test_an_over_long_line_is_skipped_and_the_next_ones_read() -> None:
    long = b'{"custom_id": "job1-item1", "x": "' + b"y" * 5000 + b'"}'
    body = b'{"a": 1}\n' + long + b'\n{"b": 2}\n' + long
    for size in (1, 3, 64, 1000, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        lines = list(bounded_lines(chunks, 1000, head=40))
        assert lines == [
            b'{"a": 1}',
            LongLine(long[:40], len(long)),
            b'{"b": 2}',
            LongLine(long[:40], len(long)),
        ], size
        assert custom_id_in(lines[1].head) == "job1-item1"  # type: ignore[union-attr]


def test_a_line_at_the_limit_is_kept_one_past_it_is_not() -> None:
    assert list(bounded_lines([b"x" * 10, b"\n", b"y" * 11], 10)) == [
        b"x" * 10,
        LongLine(b"y" * 11, 11),
    ]


def test_a_line_of_many_chunks_past_the_limit_is_skipped_as_it_streams() -> None:
    pulled = {"chunks": 0}

    def body() -> Iterator[bytes]:
        yield b'{"custom_id": "job1-item0", "x": "'
        for _ in range(20_000):  # 20 MB without a newline
            pulled["chunks"] += 1
            yield b"x" * 1024
        yield b'"}\n{"b": 2}'

    lines = bounded_lines(body(), 64 * 1024)
    first = next(lines)
    assert isinstance(first, LongLine) and first.size > 20_000 * 1024
    assert len(first.head) <= LINE_HEAD_BYTES and custom_id_in(first.head) == "job1-item0"
    assert list(lines) == [b'{"b": 2}']


def test_a_custom_id_is_found_in_a_cut_line_and_never_in_text() -> None:
    assert custom_id_in(b'{"id": "batch_req_1", "custom_id": "job3-item7", "resp') == "job3-item7"
    assert custom_id_in(b'{"custom_id":"job3-item7"') == "job3-item7"
    assert custom_id_in(b'{"text": "say \\"custom_id\\": \\"job3-item1\\""') == ""
    assert custom_id_in(b"<html>bad gateway</html>") == ""
