"""``manage.py create_token``: an API token for scripts and CI, printed once."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from dashboard.tokens import service
from dashboard.tokens.models import SCOPES


class Command(BaseCommand):
    """Create a token for ``--user`` and print its full text (the only time it is shown)."""

    help = "Create an API token and print it (once; only its hash is stored)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--user, --name, --scopes, optional --namespaces and --expires-in."""
        parser.add_argument("--user", required=True, help="The token's owner (a username).")
        parser.add_argument("--name", required=True, help="What the token is for, e.g. ci-shop.")
        parser.add_argument(
            "--scopes", required=True, help=f"Comma-separated, from {', '.join(SCOPES)}."
        )
        parser.add_argument(
            "--namespaces", default="", help="Comma-separated; left out: every namespace."
        )
        parser.add_argument(
            "--expires-in", default="", help="90m, 12h, 30d or 2w; left out: never expires."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Validate everything first; on any problem say what to fix and create nothing."""
        try:
            owner = get_user_model().objects.get_by_natural_key(options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}.") from None
        expires_at = None
        if options["expires_in"]:
            try:
                expires_at = timezone.now() + service.parse_duration(options["expires_in"])
            except ValueError as exc:
                raise CommandError(f"--expires-in: {exc}") from None
        try:
            token, secret = service.create(
                owner,
                options["name"],
                service.split_list(options["scopes"]),
                service.split_list(options["namespaces"]),
                expires_at,
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"--{field.replace('_at', '-in').replace('_', '-')}: {' '.join(messages)}"
                for field, messages in exc.message_dict.items()
            )
            raise CommandError(problems) from None
        if options["verbosity"] >= 2:
            self.stderr.write(f"Created the token {token.name} of {owner} ({token.masked}).")
        self.stdout.write(secret)
