"""URL routes of the dashboard, the REST API and the schema."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dashboard import access
from dashboard.audit import views as audit
from dashboard.metrics.views import metrics
from dashboard.notifications import views as notifications
from dashboard.podlogs import pod_log_page
from dashboard.sso import views as sso
from dashboard.tokens import views as tokens
from dashboard.views import apps, deployments, loadbalancer, registries

urlpatterns: list[URLPattern | URLResolver] = [
    path("", apps.app_list, name="home"),
    path("apps/new/", apps.app_create, name="app-create"),
    path("apps/<int:pk>/", apps.app_detail, name="app-detail"),
    path("apps/<int:pk>/edit/", apps.app_edit, name="app-edit"),
    path("apps/<int:pk>/deploy/", apps.app_deploy, name="app-deploy"),
    path("apps/<int:pk>/scale/", apps.scale_app_now, name="app-scale"),
    path("apps/<int:pk>/swap-back/", apps.app_swap_back, name="app-swap-back"),
    path("apps/<int:pk>/undeploy/", apps.app_undeploy, name="app-undeploy"),
    path("apps/<int:pk>/history/", apps.app_history, name="app-history"),
    path("apps/<int:pk>/pods/<str:pod>/logs/", pod_log_page, name="pod-logs"),
    path("deployments/", deployments.deployment_list, name="deployment-list"),
    path("deployments/<int:pk>/", deployments.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/abort/", deployments.deployment_abort, name="deployment-abort"),
    path(
        "deployments/<int:pk>/promote/", deployments.deployment_promote, name="deployment-promote"
    ),
    path("deployments/<int:pk>/reject/", deployments.deployment_reject, name="deployment-reject"),
    path("load-balancer/", loadbalancer.load_balancer, name="load-balancer"),
    path("notifications/", notifications.notification_list, name="notifications"),
    path("notifications/new/", notifications.subscription_create, name="subscription-create"),
    path("notifications/<int:pk>/edit/", notifications.subscription_edit, name="subscription-edit"),
    path(
        "notifications/<int:pk>/delete/",
        notifications.subscription_delete,
        name="subscription-delete",
    ),
    path("access/", access.access_page, name="access"),
    path("access/<int:pk>/delete/", access.binding_delete, name="binding-delete"),
    path("registries/", registries.registry_list, name="registries"),
    path("registries/<int:pk>/delete/", registries.registry_delete, name="registry-delete"),
    path("registries/tags/", registries.registry_tags, name="registry-tags"),
    path("tokens/", tokens.token_list, name="tokens"),
    path("tokens/<int:pk>/revoke/", tokens.token_revoke, name="token-revoke"),
    path("audit/", audit.audit_list, name="audit"),
    path("metrics", metrics, name="metrics"),
    path("scaling/", include("scaling.urls")),
    path("api/scaling/", include("dashboard.api.scaling_urls")),
    path("login/", sso.SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("oidc/authenticate/", sso.OidcStartView.as_view(), name="oidc-authenticate"),
    path("oidc/callback/", sso.OidcCallbackView.as_view(), name="oidc-callback"),
    # Before the admin's own: its sign-in follows GREENLIGHT_LOCAL_LOGIN too.
    path("admin/login/", sso.admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("dashboard.api.urls")),
]
