"""Uploads that stop at the dataset byte limit instead of spooling whatever a
client sends to disk first. Set on the request before its body is read (the
view is CSRF-exempt outside and protected inside, as Django's docs say for
changing upload handlers)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest


class LimitedUpload(TemporaryFileUploadHandler):
    """A temporary file that refuses to grow past ``limit`` bytes: the upload
    stops, the rest of the body is read and dropped, and the request is
    marked ``upload_too_large`` for the view to say so."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> Any:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.request.upload_too_large = True  # type: ignore[union-attr]
            raise StopUpload(connection_reset=False)
        return super().receive_data_chunk(raw_data, start)


def limit_uploads(request: HttpRequest) -> None:
    request.upload_too_large = False  # type: ignore[attr-defined]
    request.upload_handlers = [LimitedUpload(request, settings.MAX_DATASET_BYTES)]


def too_large_message() -> str:
    limit = settings.MAX_DATASET_BYTES
    return f"The file passes {limit:,} bytes; at most {limit:,} bytes per dataset."
