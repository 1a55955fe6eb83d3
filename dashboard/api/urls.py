"""The JSON API's URLs (mounted at /api/v1/ by config.urls)."""

from __future__ import annotations

from django.urls import re_path

from .views import (
    credential_create,
    credential_delete,
    credential_get,
    credential_list,
    endpoint,
    instance_create,
    instance_delete,
    instance_get,
    instance_list,
    job_cancel_api,
    job_get,
    job_list,
    job_retry_api,
    job_submit,
    not_found,
)

#: Ids are digits only and short enough for a 64-bit column; anything else is a JSON 404.
ID = r"(?P<pk>[0-9]{1,18})"

urlpatterns = [
    re_path(
        r"^credentials/?$",
        endpoint(GET=credential_list, POST=credential_create),
        name="api_credentials",
    ),
    re_path(
        rf"^credentials/{ID}/?$",
        endpoint(GET=credential_get, DELETE=credential_delete),
        name="api_credential",
    ),
    re_path(r"^jobs/?$", endpoint(GET=job_list, POST=job_submit), name="api_jobs"),
    re_path(rf"^jobs/{ID}/?$", endpoint(GET=job_get), name="api_job"),
    re_path(rf"^jobs/{ID}/cancel/?$", endpoint(POST=job_cancel_api), name="api_job_cancel"),
    re_path(rf"^jobs/{ID}/retry/?$", endpoint(POST=job_retry_api), name="api_job_retry"),
    re_path(
        r"^instances/?$", endpoint(GET=instance_list, POST=instance_create), name="api_instances"
    ),
    re_path(
        rf"^instances/{ID}/?$",
        endpoint(GET=instance_get, DELETE=instance_delete),
        name="api_instance",
    ),
    re_path(r"^.*$", not_found, name="api_not_found"),
]
