"""A batch's results put back in item order without holding them in memory.

Providers return a batch's result lines in any order (the simulators shuffle
them, as OpenAI's and Anthropic's files may come). Written as they come, a
thousand results at a time, every write updates rows spread over the whole
job: on SQLite each commit's WAL checkpoint then writes pages all over the
job's rows (figure 10 of ``make bench``, 30,000 rows on SQLite: 2,900 rows/s
written as they came, the commits 3.1 s of 10.4; 9,500 rows/s in item order,
the commits 0.3 s). So the results are first spooled to a temporary file as
they are read, with their place in an array (12 bytes a row of the chunk),
then read back in item order, one at a time.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from providers import ItemResult
from providers.batch import BatchResult, ResultKind


def pack(result: BatchResult) -> bytes:
    """One result as a line of JSON (the output as the provider's JSON gave it)."""
    fields: list[Any] = [result.custom_id, result.kind.value, result.code, result.message]
    if result.result is not None:
        item = result.result
        fields += [item.output, item.tokens_in, item.tokens_out, item.latency_ms]
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def unpack(data: bytes) -> BatchResult:
    fields = json.loads(data)
    custom_id, kind, code, message = fields[:4]
    item = ItemResult(*fields[4:]) if len(fields) > 4 else None
    return BatchResult(custom_id, ResultKind(kind), result=item, code=code, message=message)


class ResultSpool:
    """Results of a chunk of ``size`` rows, added in any order by their place
    in the chunk (0 to size - 1) and read back in place order. A place given
    twice keeps the last result. Used as a context manager (the file is gone
    on exit)."""

    def __init__(self, size: int) -> None:
        self.file = tempfile.TemporaryFile(prefix="dashboard-results-")  # noqa: SIM115 (closed on exit)
        self.offsets = array("q", [-1]) * size
        self.lengths = array("I", [0]) * size
        self.end = 0

    def add(self, place: int, result: BatchResult) -> None:
        data = pack(result)
        self.file.write(data)
        self.offsets[place], self.lengths[place] = self.end, len(data)
        self.end += len(data)

    def __iter__(self) -> Iterator[tuple[int, BatchResult]]:
        self.file.flush()
        fd = self.file.fileno()
        for place, offset in enumerate(self.offsets):
            if offset >= 0:
                yield place, unpack(os.pread(fd, self.lengths[place], offset))

    def __enter__(self) -> ResultSpool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.file.close()
