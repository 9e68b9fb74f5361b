"""REST routes under /api/ (namespace ``api``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import DefaultRouter

from dashboard import access
from dashboard.api import hooks, loadbalancers, views
from dashboard.audit.api import AuditList
from dashboard.notifications import api as notifications
from dashboard.tokens import api as tokens

app_name = "api"

router = DefaultRouter()
router.register("apps", views.AppViewSet, basename="app")
router.register("deployments", views.DeploymentViewSet, basename="deployment")
router.register(
    "notifications/subscriptions", notifications.SubscriptionViewSet, basename="subscription"
)
router.register("notifications/deliveries", notifications.DeliveryViewSet, basename="delivery")
router.register("tokens", tokens.TokenViewSet, basename="token")
router.register("role-bindings", access.RoleBindingViewSet, basename="role-binding")

urlpatterns: list[URLPattern | URLResolver] = [
    path("hooks/dockerhub/<str:secret>/", hooks.DockerHubHook.as_view(), name="hook-dockerhub"),
    path("hooks/generic/<int:app_id>/", hooks.GenericHook.as_view(), name="hook-generic"),
    path(
        "load-balancers/",
        loadbalancers.LoadBalancerList.as_view(),
        name="load-balancer-list",
    ),
    path("audit/", AuditList.as_view(), name="audit-list"),
    *router.urls,
]
