"""Every page and htmx partial of the web UI (mounted at the root by config.urls)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from dashboard.accounts.throttle import ThrottledAuthenticationForm

from . import (
    charts,
    compare,
    credentials,
    datasets,
    diff,
    history,
    instances,
    jobs,
    notifications,
    team,
    tokens,
    usage,
    views,
    webhooks,
)

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            redirect_authenticated_user=True, authentication_form=ThrottledAuthenticationForm
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("team/switch", views.switch_team, name="switch_team"),
    # credentials
    path("credentials/", credentials.credential_list, name="credential_list"),
    path("credentials/<int:pk>/delete", credentials.credential_delete, name="credential_delete"),
    path("credentials/<int:pk>/edit", credentials.credential_edit, name="credential_edit"),
    path("credentials/<int:pk>/test", credentials.credential_test_view, name="credential_test"),
    path("credentials/<int:pk>/models", credentials.model_catalog, name="model_catalog"),
    path(
        "credentials/<int:pk>/models/refresh",
        credentials.model_catalog_refresh,
        name="model_catalog_refresh",
    ),
    # jobs and their history
    path("jobs/", history.job_list, name="job_list"),
    path("jobs/export.csv", history.job_export_csv, name="job_export_csv"),
    path("jobs/export.jsonl", history.job_export_jsonl, name="job_export_jsonl"),
    path("jobs/new", jobs.job_new, name="job_new"),
    path("jobs/new/models", jobs.job_new_models, name="job_new_models"),
    path("jobs/estimate", jobs.job_estimate, name="job_estimate"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job_detail"),
    path("jobs/<int:pk>/live", jobs.job_live, name="job_live"),
    path("jobs/<int:pk>/diff", diff.job_diff, name="job_diff"),
    path("jobs/<int:pk>/cancel", jobs.job_cancel_view, name="job_cancel"),
    path("jobs/<int:pk>/retry", jobs.job_retry_view, name="job_retry"),
    path(
        "jobs/<int:pk>/batches/<int:number>/resubmit",
        jobs.job_chunk_resubmit,
        name="job_chunk_resubmit",
    ),
    path("jobs/<int:pk>/note", jobs.job_note, name="job_note"),
    re_path(
        r"^jobs/(?P<pk>[0-9]{1,18})/items\.(?P<fmt>csv|jsonl|xlsx)$",
        jobs.job_items_export,
        name="job_items_export",
    ),
    path("jobs/<int:pk>/rate", jobs.job_rate, name="job_rate"),
    re_path(
        r"^jobs/(?P<pk>[0-9]{1,18})/items/(?P<index>[0-9]{1,9})/$",
        jobs.job_item_detail,
        name="job_item_detail",
    ),
    # datasets and comparisons
    path("datasets/", datasets.dataset_list, name="dataset_list"),
    path("datasets/preview", datasets.dataset_template_preview, name="dataset_template_preview"),
    path("datasets/<int:pk>/", datasets.dataset_detail, name="dataset_detail"),
    path("datasets/<int:pk>/rename", datasets.dataset_rename_view, name="dataset_rename"),
    path("datasets/<int:pk>/delete", datasets.dataset_delete_view, name="dataset_delete"),
    path("comparisons/", compare.comparison_list, name="comparison_list"),
    path("comparisons/new", compare.comparison_new, name="comparison_new"),
    path("comparisons/<int:pk>/", compare.comparison_detail, name="comparison_detail"),
    path("comparisons/<int:pk>/live", compare.comparison_live, name="comparison_live"),
    re_path(
        r"^comparisons/(?P<pk>[0-9]{1,18})/rows/(?P<index>[0-9]{1,9})/t(?P<target>[1-8])/$",
        compare.comparison_cell,
        name="comparison_cell",
    ),
    path("comparisons/<int:pk>/rate", compare.comparison_rate, name="comparison_rate"),
    path("comparisons/<int:pk>/note", compare.comparison_note, name="comparison_note"),
    path("comparisons/<int:pk>/retry", compare.comparison_retry, name="comparison_retry"),
    re_path(
        r"^comparisons/(?P<pk>[0-9]{1,18})/export\.(?P<fmt>csv|jsonl|xlsx)$",
        compare.comparison_export,
        name="comparison_export",
    ),
    # model instances
    path("instances/", instances.instance_list, name="instance_list"),
    path("instances/request", instances.instance_request_view, name="instance_request"),
    path("instances/panel", instances.instance_panel, name="instance_panel"),
    path("instances/check", instances.instance_reconcile_view, name="instance_reconcile"),
    path("instances/rate", instances.instance_rate, name="instance_rate"),
    path("instances/<int:pk>/load", instances.instance_load_view, name="instance_load"),
    path("instances/<int:pk>/shutdown", instances.instance_shutdown_view, name="instance_shutdown"),
    # the team
    path("team/", team.team_page, name="team"),
    path("team/members/add", team.member_add_view, name="team_member_add"),
    path("team/members/<int:pk>/role", team.member_role_view, name="team_member_role"),
    path("team/members/<int:pk>/remove", team.member_remove_view, name="team_member_remove"),
    path("team/settings", team.team_settings_view, name="team_settings"),
    path("team/audit/", team.audit_log, name="audit"),
    # API tokens; digits only, short enough for the id column: anything else is a plain 404.
    re_path(r"^account/tokens/$", tokens.token_list, name="token_list"),
    re_path(
        r"^account/tokens/(?P<pk>[0-9]{1,18})/revoke$", tokens.token_revoke, name="token_revoke"
    ),
    path(
        "account/notifications",
        notifications.account_notifications,
        name="account_notifications",
    ),
    # usage: charts, spend against the budget, prices
    path("usage/", usage.usage_page, name="usage"),
    *[
        path(
            f"usage/charts/{name}.svg",
            usage.usage_chart,
            {"name": name},
            name=f"usage_chart_{name}",
        )
        for name in charts.CHARTS
    ],
    path("usage/prices", usage.price_save, name="price_save"),
    path("usage/prices/<int:pk>/delete", usage.price_delete_view, name="price_delete"),
    path("usage/budget", usage.budget_save, name="budget_save"),
    # webhooks (team admins)
    path("webhooks/", webhooks.webhook_list, name="webhook_list"),
    path("webhooks/<int:pk>/", webhooks.webhook_detail, name="webhook_detail"),
    path("webhooks/<int:pk>/delete", webhooks.webhook_delete, name="webhook_delete"),
    path(
        "webhooks/deliveries/<int:pk>/redeliver",
        webhooks.delivery_redeliver,
        name="delivery_redeliver",
    ),
]
