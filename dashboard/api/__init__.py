"""The JSON API under /api/v1/ (DESIGN, "JSON API"), on django-ninja.

main         the NinjaAPI: auth, renderer, parser, docs, routers
errors       ApiError and one handler per error class: DESIGN's error shape
wire         strict JSON in (no NUL, NaN, Infinity), markup-safe JSON out
auth         bearer tokens
schemas      every body and answer; the OpenAPI schema is generated from them
scope        which team a call acts in; objects in the path via access.object_for
credentials, jobs, instances   the operations, a few lines over the services
converters   ids in paths: digits, at most 18
urls         flat URL names (api_jobs, …), JSON 404 and 405, optional trailing slash
"""
