"""The project's URLs: the web UI at the root, the JSON API under /api/v1/,
and the Django admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("dashboard.api.urls")),
    path("", include("dashboard.web.urls")),
]
