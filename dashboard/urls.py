from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views, views_history
from .throttle import ThrottledAuthenticationForm

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
    path("credentials/", views.credential_list, name="credential_list"),
    path("credentials/<int:pk>/delete", views.credential_delete, name="credential_delete"),
    path("jobs/", views_history.job_list, name="job_list"),
    path("jobs/new", views.job_new, name="job_new"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/live", views.job_live, name="job_live"),
    path("jobs/<int:pk>/cancel", views.job_cancel_view, name="job_cancel"),
    path("jobs/<int:pk>/retry", views.job_retry_view, name="job_retry"),
    path("jobs/<int:pk>/note", views.job_note, name="job_note"),
    path("admin/", admin.site.urls),
]

# Feature modules, each with its own `urlpatterns` (one line each).
urlpatterns += [
    path("", include("dashboard.views_instances")),
    path("", include("dashboard.views_history")),
    path("", include("dashboard.views_team")),
    path("api/v1/", include("dashboard.api")),
    path("", include("dashboard.views_tokens")),
]
