"""Registries: credentials per registry host, and the tag suggestions of the app form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from deployer import permissions, registry
from deployer.models import RegistryCredential
from deployer.validation import validate_image

# Tags sent to the form at most (newest first).
TAGS_SHOWN = 100


def may_manage_registries(user: Any) -> bool:
    """Registry logins serve apps of every namespace: administrators of every namespace keep them."""
    return permissions.may(user, "app", "*")


class RegistryForm(forms.ModelForm):
    """A registry host's login; the password is never shown, and left empty it is kept."""

    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Or a token. Left empty when the host is already kept: the saved one stays.",
    )

    class Meta:
        model = RegistryCredential
        fields = ["host", "username", "password", "plain_http"]
        labels = {"plain_http": "Plain HTTP (no TLS)"}
        help_texts = {
            "host": "As in image names: registry.example.com or registry.example.com:5000. "
            "Docker Hub is registry-1.docker.io.",
        }

    def clean_host(self) -> str:
        host = self.cleaned_data["host"].strip().lower()
        if not host or "/" in host or " " in host:
            raise forms.ValidationError("A host name with an optional :port, no scheme or path.")
        return host

    def save(self, commit: bool = True) -> RegistryCredential:
        credential = super().save(commit=False)
        if not self.cleaned_data.get("password") and self.instance.pk:
            credential.password = RegistryCredential.objects.get(pk=self.instance.pk).password
        if commit:
            credential.save()
        return credential


@require_http_methods(["GET", "POST"])
def registry_list(request: HttpRequest) -> HttpResponse:
    """The kept registry logins (host and user; passwords masked); POST adds or replaces one."""
    if not may_manage_registries(request.user):
        raise PermissionDenied("Only administrators of every namespace keep registry logins.")
    form = RegistryForm()
    status = 200
    if request.method == "POST":
        existing = RegistryCredential.objects.filter(
            host=request.POST.get("host", "").strip().lower()
        ).first()
        form = RegistryForm(request.POST, instance=existing)
        if form.is_valid():
            credential = form.save(commit=False)
            credential.updated_by = request.user
            credential.save()
            registry.forget_host(credential.host)
            messages.success(request, f"Saved the login for {credential.host}.")
            return redirect("registries")
        status = 400
    return render(
        request,
        "dashboard/registries.html",
        {"form": form, "registries": RegistryCredential.objects.all()},
        status=status,
    )


@require_POST
def registry_delete(request: HttpRequest, pk: int) -> HttpResponse:
    if not may_manage_registries(request.user):
        raise PermissionDenied("Only administrators of every namespace keep registry logins.")
    credential = get_object_or_404(RegistryCredential, pk=pk)
    credential.delete()
    registry.forget_host(credential.host)
    messages.success(request, f"Removed the login for {credential.host}.")
    return redirect("registries")


@require_GET
def registry_tags(request: HttpRequest) -> JsonResponse:
    """``?image=repo:tag`` -> the repository's tags, newest first, or why there are none."""
    if not permissions.can_change_app(request.user):
        raise PermissionDenied("You may not change apps.")
    image = request.GET.get("image", "").strip()
    try:
        validate_image(image)
    except Exception:
        return JsonResponse(
            {"repository": "", "tags": [], "error": "Type an image such as demo/hello:1."},
            status=400,
        )
    found = registry.lookup(image)
    return JsonResponse({**found, "tags": found["tags"][:TAGS_SHOWN]})
