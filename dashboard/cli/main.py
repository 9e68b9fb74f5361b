"""The ``greenlight`` command: deploy, follow, inspect and steer apps through the REST API.

Exit codes: 0 success; 1 the operation failed (a deploy that failed, rolled back, was
swapped back by the guard, rejected or aborted; a 409 refusal); 2 the command could not
run (bad usage, 401/403, unknown app or deployment, bad image, unreachable dashboard).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click
from click.shell_completion import get_completion_class
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dashboard.cli.client import FAILED, Api, CliError, check_url, save_config

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
TERMINAL = frozenset({"succeeded", "failed", "aborted"})
POLL_SECONDS = 1.0
LOG_PAGE = 1000
LEVEL_COLOURS = {"error": "red", "warning": "yellow", "success": "green"}

# A pipeline's log is no terminal: wide enough there that tables are not cut at 80 columns.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class Context:
    """What every command gets: how to reach the API (made on first use) and the output."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self.url, self.token = url, token
        self._api: Api | None = None

    @property
    def api(self) -> Api:
        """The API client; a ``CliError`` when no dashboard is configured."""
        if self._api is None:
            self._api = Api.from_environment(self.url, self.token)
        return self._api


def command(group: click.Group, name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """A subcommand with ``--output text|json`` whose ``CliError`` exits with its code."""

    def decorate(function: Callable[..., Any]) -> Any:
        @group.command(name=name, help=function.__doc__)
        @click.option(
            "--output",
            "-o",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="json: machine-readable, with the API's keys.",
        )
        @click.pass_obj
        @functools.wraps(function)
        def run(obj: Context, *args: Any, **kwargs: Any) -> None:
            try:
                code = function(obj, *args, **kwargs)
            except CliError as exc:
                click.echo(f"Error: {exc.message}", err=True)
                sys.exit(exc.code)
            sys.exit(code or 0)

        return run

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="GREENLIGHT_URL", help="The dashboard, e.g. http://127.0.0.1:8000.")
@click.option("--token", envvar="GREENLIGHT_TOKEN", help="An API token (glt_...).")
@click.version_option(package_name="greenlight")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Deploy and follow Greenlight apps from a terminal or CI.

    The dashboard and token come from --url/--token, GREENLIGHT_URL/GREENLIGHT_TOKEN,
    or the file `greenlight login` writes.
    """
    ctx.obj = Context(url, token)


def add_row(table: Table, *cells: str) -> None:
    """A table row of plain text (an image or a name is never read as rich markup)."""
    table.add_row(*map(escape, cells))


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))


# Apps and deployments by what a person types.


def find_app(api: Api, reference: str) -> dict[str, Any]:
    """The app named ``reference``: an id, ``namespace/name``, or a name unique across namespaces."""
    if reference.isdigit():
        try:
            return api.get(f"apps/{reference}/")
        except CliError as exc:
            if "(404)" in exc.message:
                raise CliError(f"No app with id {reference}.") from None
            raise
    namespace, _, name = reference.rpartition("/")
    params = {"namespace": namespace} if namespace else {}
    matches = [app for app in api.every("apps/", **params) if app["name"] == name]
    if not matches:
        where = f" in namespace {namespace}" if namespace else ""
        raise CliError(f"No app named {name!r}{where}; `greenlight apps` lists them.")
    if len(matches) > 1:
        names = ", ".join(f"{app['namespace']}/{app['name']}" for app in matches)
        raise CliError(
            f"{name!r} is in several namespaces ({names}): say which, e.g. {names.split(', ')[0]}."
        )
    return matches[0]


def deployment_id(reference: str) -> int:
    """A deployment's id as typed; a usage error otherwise."""
    if not reference.isdigit():
        raise CliError(f"{reference!r} is not a deployment id (a number, as `history` shows).")
    return int(reference)


def get_deployment(api: Api, number: int) -> dict[str, Any]:
    """One deployment; a clear error when there is none."""
    try:
        return api.get(f"deployments/{number}/")
    except CliError as exc:
        if "(404)" in exc.message:
            raise CliError(f"No deployment with id {number}.") from None
        raise


def log_line(line: dict[str, Any]) -> str:
    """One stored log line as the terminal shows it."""
    clock = str(line.get("time") or "")[11:19]
    step = f"[{line['step']}] " if line.get("step") else ""
    text = f"{clock} {line.get('level', 'info'):<7} {step}{line['message']}"
    colour = LEVEL_COLOURS.get(str(line.get("level")))
    return click.style(text, fg=colour) if colour else text


def log_pages(api: Api, number: int, follow: bool) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """Pages of stored lines (and the deployment's status) from the first on.

    Following, it polls with ``after=`` until the deployment is finished and every line
    stored before then has come.
    """
    after = 0
    while True:
        page = api.get(f"deployments/{number}/logs/", after=after, limit=LOG_PAGE)
        after = page["last_seq"]
        yield page["results"], page["status"]
        if page["has_more"]:
            continue
        if not follow or page["status"] in TERMINAL:
            return
        time.sleep(POLL_SECONDS)


def wait_for(
    api: Api, number: int, *, follow: bool, quiet: bool, timeout: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wait until the deployment finishes, printing its log when following; it and the lines.

    Following polls the log with ``after=`` (the log page carries the status too); the
    last page is read once the status is terminal, so every line stored by then comes.
    """
    deadline = time.monotonic() + timeout
    lines: list[dict[str, Any]] = []
    after, hinted = 0, False
    while True:
        if follow:
            page = api.get(f"deployments/{number}/logs/", after=after, limit=LOG_PAGE)
            after, status = page["last_seq"], page["status"]
            lines.extend(page["results"])
            if not quiet:
                for line in page["results"]:
                    click.echo(log_line(line))
            if page["has_more"]:
                continue
        else:
            status = get_deployment(api, number)["status"]
        if status in TERMINAL:
            return get_deployment(api, number), lines
        if status == "awaiting_promotion" and not hinted and not quiet:
            hinted = True
            click.echo(
                click.style(
                    f"Deployment {number} awaits promotion: `greenlight promote {number}` "
                    f"switches to it, `greenlight reject {number}` rolls it back.",
                    fg="yellow",
                ),
                err=True,
            )
        if time.monotonic() > deadline:
            raise CliError(f"Deployment {number} still {status} after {timeout:.0f}s.", FAILED)
        time.sleep(POLL_SECONDS)


def outcome(deployment: dict[str, Any]) -> int:
    """The exit code of a finished deployment: 0 when it succeeded, 1 otherwise."""
    return 0 if deployment["status"] == "succeeded" else FAILED


def report(deployment: dict[str, Any]) -> None:
    """A finished deployment's last line on stderr."""
    name, version = deployment["app_name"], deployment.get("version")
    if deployment["status"] == "succeeded":
        message = click.style(
            f"Deployment {deployment['id']} succeeded: {name} v{version}.", fg="green"
        )
    else:
        why = deployment.get("failure_reason") or "no reason recorded"
        message = click.style(
            f"Deployment {deployment['id']} {deployment['status']}: {why}", fg="red"
        )
    click.echo(message, err=True)


def queued_then_wait(
    api: Api, queued: dict[str, Any], *, wait: bool, follow: bool, output: str, timeout: float
) -> int:
    """After a 202: print what was queued, and with ``wait``/``follow`` wait for the end."""
    number = queued["id"]
    if output == "text":
        click.echo(f"Deployment {number} queued: {queued['web_url']}", err=True)
    if not (wait or follow):
        if output == "json":
            emit_json(queued)
        return 0
    deployment, lines = wait_for(
        api, number, follow=follow, quiet=output == "json", timeout=timeout
    )
    if output == "json":
        emit_json({**deployment, "log": lines} if follow else deployment)
    else:
        report(deployment)
    return outcome(deployment)


def wait_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--wait, --follow and --timeout for commands that queue a deployment."""
    function = click.option(
        "--timeout",
        type=click.FloatRange(min=1),
        default=3600,
        show_default=True,
        help="Seconds to wait before giving up (exit 1).",
    )(function)
    function = click.option(
        "--follow", "-f", is_flag=True, help="Print the live log as it comes; implies --wait."
    )(function)
    return click.option(
        "--wait", "-w", is_flag=True, help="Wait for the end: exit 0 on success, 1 otherwise."
    )(function)


# Commands.


@cli.command()
@click.option("--url", "login_url", prompt="Dashboard URL", help="e.g. http://127.0.0.1:8000")
@click.option("--token", "login_token", prompt="API token", hide_input=True, help="glt_...")
def login(login_url: str, login_token: str) -> None:
    """Check a dashboard URL and token against the API, then save them (mode 0600)."""
    try:
        api = Api(check_url(login_url), login_token.strip())
        api.get("apps/", page_size=1)
        path = save_config(api.url, api.token)
    except CliError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.code)
    click.echo(f"Signed in to {api.url}; saved to {path}.")


@command(cli)
def apps(obj: Context, output: str) -> int:
    """List the apps: namespace, name, image, replicas and live version."""
    rows = list(obj.api.every("apps/"))
    if output == "json":
        emit_json(rows)
        return 0
    table = Table("id", "app", "image", "replicas", "live", "frontend")
    for app in rows:
        add_row(
            table,
            str(app["id"]),
            f"{app['namespace']}/{app['name']}",
            app["image"],
            str(app["replicas"]),
            f"v{app['live_version']}" if app.get("live_version") else "-",
            app.get("frontend") or "",
        )
    console.print(table)
    return 0


@command(cli)
@click.argument("app")
def status(obj: Context, output: str, app: str) -> int:
    """An app's live version and its latest deployment."""
    found = find_app(obj.api, app)
    latest = obj.api.get("deployments/", app=found["id"], page_size=1)["results"]
    if output == "json":
        emit_json({"app": found, "latest_deployment": latest[0] if latest else None})
        return 0
    live = f"v{found['live_version']}" if found.get("live_version") else "not deployed"
    console.print(f"[bold]{found['namespace']}/{found['name']}[/] (id {found['id']}): {live}")
    console.print(
        f"  image {found['image']}, {found['replicas']} replicas, {found['web_url']}", markup=False
    )
    if latest:
        last = latest[0]
        console.print(
            f"  latest deployment {last['id']}: {last['kind']} v{last['version']} "
            f"{last['status']} ({last['image']}, {last['created_at']})",
            markup=False,
        )
    return 0


@command(cli)
@click.argument("app")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
def history(obj: Context, output: str, app: str, limit: int) -> int:
    """An app's deployments, newest first."""
    found = find_app(obj.api, app)
    rows: list[dict[str, Any]] = []
    for row in obj.api.every("deployments/", app=found["id"]):
        rows.append(row)
        if len(rows) >= limit:
            break
    if output == "json":
        emit_json(rows)
        return 0
    table = Table(
        "id",
        "kind",
        "version",
        "image",
        "status",
        "trigger",
        "by",
        "created",
        title=f"{found['namespace']}/{found['name']}",
    )
    for row in rows:
        add_row(
            table,
            str(row["id"]),
            row["kind"],
            f"v{row['version']}" if row.get("version") is not None else "-",
            row["image"],
            row["status"],
            row["trigger"],
            row.get("triggered_by") or "",
            str(row["created_at"])[:19].replace("T", " "),
        )
    console.print(table)
    return 0


@command(cli)
@click.argument("app")
@click.option("--image", "-i", help="Deploy this image instead of the app's.")
@wait_options
def deploy(
    obj: Context, output: str, app: str, image: str | None, wait: bool, follow: bool, timeout: float
) -> int:
    """Deploy an app (a name, namespace/name or id), optionally waiting and following its log."""
    found = find_app(obj.api, app)
    queued = obj.api.post(f"apps/{found['id']}/deploy/", {"image": image} if image else {})
    return queued_then_wait(
        obj.api, queued, wait=wait, follow=follow, output=output, timeout=timeout
    )


@command(cli)
@click.argument("deployment")
@click.option("--follow", "-f", is_flag=True, help="Go on printing lines until it finishes.")
def logs(obj: Context, output: str, deployment: str, follow: bool) -> int:
    """A deployment's stored log; with --follow, its live log until it finishes.

    With --output json: one JSON object per line (JSON Lines).
    """
    number = deployment_id(deployment)
    get_deployment(obj.api, number)
    for page, _status in log_pages(obj.api, number, follow=follow):
        for line in page:
            click.echo(json.dumps(line, sort_keys=True) if output == "json" else log_line(line))
    return 0


def decide(obj: Context, output: str, deployment: str, verb: str) -> int:
    """POST ``verb`` (abort, promote, reject) to a deployment and show the answer."""
    number = deployment_id(deployment)
    get_deployment(obj.api, number)
    answer = obj.api.post(f"deployments/{number}/{verb}/")
    if output == "json":
        emit_json(answer)
    else:
        click.echo(f"Deployment {number}: {verb} requested (now {answer['status']}).")
    return 0


@command(cli)
@click.argument("deployment")
def abort(obj: Context, output: str, deployment: str) -> int:
    """Abort a queued or running deployment (exit 1 when it has finished)."""
    return decide(obj, output, deployment, "abort")


@command(cli)
@click.argument("deployment")
def promote(obj: Context, output: str, deployment: str) -> int:
    """Promote a deployment awaiting promotion: the switch goes on."""
    return decide(obj, output, deployment, "promote")


@command(cli)
@click.argument("deployment")
def reject(obj: Context, output: str, deployment: str) -> int:
    """Reject a deployment awaiting promotion: it rolls back."""
    return decide(obj, output, deployment, "reject")


@command(cli, name="swap-back")
@click.argument("app")
@wait_options
def swap_back(obj: Context, output: str, app: str, wait: bool, follow: bool, timeout: float) -> int:
    """Switch an app back to its previous version while it is still warm."""
    found = find_app(obj.api, app)
    queued = obj.api.post(f"apps/{found['id']}/swap-back/")
    return queued_then_wait(
        obj.api, queued, wait=wait, follow=follow, output=output, timeout=timeout
    )


@command(cli)
@click.argument("app")
@click.argument("replicas", type=click.IntRange(min=0))
def scale(obj: Context, output: str, app: str, replicas: int) -> int:
    """Set an app's replicas (and its live version's in the cluster)."""
    found = find_app(obj.api, app)
    answer = obj.api.post(f"apps/{found['id']}/scale/", {"replicas": replicas})
    if output == "json":
        emit_json(answer)
    else:
        click.echo(f"{answer['namespace']}/{answer['name']} now has {answer['replicas']} replicas.")
    return 0


@cli.group()
def schedules() -> None:
    """Scaling schedules."""


def find_schedule(api: Api, reference: str) -> dict[str, Any]:
    """A schedule by id or name."""
    if reference.isdigit():
        try:
            return api.get(f"scaling/schedules/{reference}/")
        except CliError as exc:
            if "(404)" in exc.message:
                raise CliError(f"No schedule with id {reference}.") from None
            raise
    for row in api.every("scaling/schedules/"):
        if row["name"] == reference:
            return row
    raise CliError(f"No schedule named {reference!r}; `greenlight schedules list` lists them.")


@command(schedules, name="list")
def schedules_list(obj: Context, output: str) -> int:
    """List the schedules and their next run."""
    rows = list(obj.api.every("scaling/schedules/"))
    if output == "json":
        emit_json(rows)
        return 0
    table = Table("id", "name", "enabled", "when", "timezone", "next run")
    for row in rows:
        add_row(
            table,
            str(row["id"]),
            row["name"],
            "yes" if row["enabled"] else "no",
            when(row),
            row["timezone"],
            next_run(row),
        )
    console.print(table)
    return 0


@command(schedules, name="show")
@click.argument("schedule")
def schedules_show(obj: Context, output: str, schedule: str) -> int:
    """One schedule (an id or a name): when it runs and what it sets."""
    row = find_schedule(obj.api, schedule)
    if output == "json":
        emit_json(row)
        return 0
    state = "enabled" if row["enabled"] else "disabled"
    console.print(
        f"[bold]{escape(row['name'])}[/] (id {row['id']}, {state}): {when(row)} {row['timezone']}"
    )
    for action in row.get("app_actions") or []:
        floor = f", floor {action['floor']}" if action.get("floor") is not None else ""
        console.print(
            f"  app {action['app_name']}: {action['mode']} {action['value']}{floor}", markup=False
        )
    for action in row.get("node_group_actions") or []:
        console.print(f"  node group {action['node_group_name']}: {action['desired']} nodes")
    for run in row.get("next_runs") or []:
        console.print(f"  next: {describe_run(run)}", markup=False)
    if row.get("problem"):
        console.print(f"  [red]{escape(row['problem'])}[/]")
    return 0


def when(row: dict[str, Any]) -> str:
    """A schedule's timing as one phrase."""
    if row["kind"] == "cron":
        return f"cron {row['cron']}"
    days = ",".join(WEEKDAYS[day] for day in row.get("days") or [])
    until = f"-{row['until_time']}" if row.get("until_time") else ""
    return f"{days} {row.get('at_time') or ''}{until}".strip()


def describe_run(run: dict[str, str]) -> str:
    """One upcoming run: its local time, what it does, and any daylight-saving note."""
    note = f" ({run['note']})" if run.get("note") else ""
    return f"{run['local']} ({run['utc']} UTC) {run['event']}{note}"


def next_run(row: dict[str, Any]) -> str:
    """The first of a schedule's next runs, or a dash."""
    runs = row.get("next_runs") or []
    return f"{runs[0]['local']} {runs[0]['event']}" if runs else "-"


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(greenlight completion bash)"."""
    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(cli, {}, "greenlight", "_GREENLIGHT_COMPLETE").source())


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="greenlight")


if __name__ == "__main__":
    main()
