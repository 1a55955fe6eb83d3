"""The JSON API's URLs (mounted at /api/v1/ by config.urls).

ninja's patterns, mounted flat so their names stay ``api_jobs``,
``api_job``, … as before, with what ninja does not do the API's way: a
wrong method is a JSON 405 with ``Allow``, an unknown path a JSON 404, and
a trailing slash is optional."""

from __future__ import annotations

from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import Resolver404, URLPattern, path, re_path, resolve, reverse
from django.views.decorators.csrf import csrf_exempt

from . import converters  # noqa: F401  (registers the path converter the routes use)
from .errors import error_response
from .main import api

#: ninja's own URL names, in the names' style of this project.
RENAMED = {"openapi-json": "api_openapi", "openapi-view": "api_docs"}


def _json_405(view: Any) -> Any:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = ", ".join(sorted(m.strip() for m in response["Allow"].split(",")))
            message = f"{request.method} is not allowed on {request.path}; use {allowed}."
            return error_response(api, request, 405, message, headers={"Allow": allowed})
        return response

    return csrf_exempt(wrapped)


def api_patterns() -> list[URLPattern]:
    """One pattern per route (ninja gives one per operation), ninja's root left
    out: the JSON 404 below answers there."""
    patterns: list[URLPattern] = []
    seen: set[str] = set()
    for pattern in api.urls[0]:
        route = str(pattern.pattern)
        if pattern.name == "api-root" or route in seen:
            continue
        seen.add(route)
        name = RENAMED.get(pattern.name or "", pattern.name)
        patterns.append(path(route, _json_405(pattern.callback), name=name))
    return patterns


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """An unknown path; first, the same path without its trailing slash."""
    root = reverse("api_root")
    rest = request.path_info[len(root) :]
    if rest.endswith("/") and rest.strip("/"):
        try:
            match = resolve("/" + rest[:-1], urlconf=__name__)
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            return match.func(request, *match.args, **match.kwargs)
    docs = reverse("api_docs")
    return error_response(
        api,
        request,
        404,
        f"There is no API endpoint at {request.path}; the endpoints are listed at {docs}.",
    )


urlpatterns = [
    *api_patterns(),
    path("", not_found, name="api_root"),
    # Any path at all: "." stops at a newline, and "/jobs/%0A" is a path too.
    re_path(r"^[\s\S]*\Z", not_found, name="api_not_found"),
]
