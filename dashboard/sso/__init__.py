"""Single sign-on: OpenID Connect through mozilla-django-oidc, with groups from a claim."""
