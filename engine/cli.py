"""The ``crm`` command: check, migrate and serve a configuration; import and export records.

Every error a user can cause is printed as one clear line (``file:line:col``
for metadata) with exit status 1; a traceback means a bug in the engine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from engine.errors import HandledError, MetadataError

F = TypeVar("F", bound=Callable[..., Any])
CONFIG = click.argument("path", type=click.Path(file_okay=False, path_type=Path))


def handled(fn: F) -> F:
    """Turn the errors a user can fix into messages and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MetadataError as exc:
            for problem in exc.problems:
                click.echo(str(problem))
            n = len(exc.problems)
            click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
            sys.exit(1)
        except HandledError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except sa.exc.OperationalError as exc:
            click.echo(f"error: the database is not reachable: {_db_message(exc)}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _db_message(exc: sa.exc.OperationalError) -> str:
    """The driver's first line, without the statement or connection parameters."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"


def safe_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crm-framework", prog_name="crm")
def main() -> None:
    """A low-code CRM: describe it in YAML, check it, migrate the database, serve it."""


@main.command()
@CONFIG
@handled
def check(path: Path) -> None:
    """Validate a configuration; print every problem as file:line:col: message."""
    from engine.configuration import load_configuration

    registry = load_configuration(path).registry
    types = [d for d in registry.documents.values() if not d.builtin]
    click.echo(f"{path}: OK — {len(types)} document types, {len(registry.roles)} roles, "
               f"{len(registry.segments)} segments, {len(registry.reports)} reports")  # fmt: skip


@main.command()
@CONFIG
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
@click.option(
    "--drop-retired",
    is_flag=True,
    help="Also drop columns no field uses any more (their data is lost).",
)
@handled
def migrate(path: Path, dry_run: bool, drop_retired: bool) -> None:
    """Show and apply schema changes (tables, columns, indexes) and sync roles."""
    from engine import migrate as m
    from engine.app import create_app
    from engine.security import sync

    app = create_app(path)
    crm = app.extensions["crm"]
    url = crm.registry.database
    _ensure_sqlite_folder(url)
    engine = sa.create_engine(url)
    try:
        the_plan = m.plan(crm.models, engine, drop_retired=drop_retired)
        click.echo(f"Database {safe_url(url)}:")
        lines = the_plan.lines()
        click.echo("\n".join(lines) if lines else "  the schema is up to date")
        if the_plan.refused:
            raise HandledError(f"{len(the_plan.refused)} change(s) refused; nothing was applied")
        if dry_run:
            click.echo("dry run: nothing was changed")
            return
        m.apply(crm.models, engine, the_plan)
    finally:
        engine.dispose()
    with app.app_context():
        changes = sync(crm.appbuilder, crm.registry)
    for line in changes:
        click.echo(f"  * {line}")
    click.echo("migrated" if lines or changes else "nothing to do")


def _ensure_sqlite_folder(url: str) -> None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


@main.command()
@CONFIG
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--debug", is_flag=True, help="Reload on code changes (development only).")
@handled
def run(path: Path, host: str, port: int, debug: bool) -> None:
    """Serve a configuration with the development server (use gunicorn in production)."""
    from engine.app import create_app

    app = create_app(path)
    click.echo(f"Serving {app.config['APP_NAME']} on http://{host}:{port}/")
    _serve(app, host, port, debug)


def _serve(app: Any, host: str, port: int, debug: bool = False) -> None:
    """The development server, with the background jobs in the same process
    unless the config runs them apart (``jobs: {runner: external}``)."""
    # with --debug the reloader's parent only watches files: jobs run in its child
    if app.extensions["crm"].registry.jobs.get("runner") != "external" and (
        not debug or os.environ.get("WERKZEUG_RUN_MAIN") == "true"
    ):
        from engine.jobs import start_in_process

        start_in_process(app)
        click.echo("Background jobs run in this process (`jobs: {runner: external}` to stop that)")
    app.run(host=host, port=port, debug=debug, use_reloader=debug)


@main.command()
@CONFIG
@click.option("--once", is_flag=True, help="Run what is due now, then exit.")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=None, metavar="SECONDS",
    help="How long to wait when nothing is due (default: the config's jobs.interval, else 5).",
)  # fmt: skip
@handled
def worker(path: Path, once: bool, interval: float | None) -> None:
    """Run background jobs (email, SMS, the plugins' jobs) until stopped.

    SIGTERM or Ctrl-C lets the job that runs now finish, then exits. Run as
    many workers as you like: a job runs in one of them at a time."""
    import logging
    import signal

    from engine.app import create_app
    from engine.jobs import OUTBOX, interval_of, runner_for

    app = create_app(path)
    crm = app.extensions["crm"]
    logger = logging.getLogger("crm")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    with app.app_context():
        runner = runner_for(app)
        if not sa.inspect(runner.engine).has_table(OUTBOX.name):
            raise HandledError(f"the database has no job tables: run `crm migrate {path}` first")
        if once:
            queued = runner.run_schedules()
            ran = runner.drain()
            click.echo(f"ran {ran} job(s)" + (f", {queued} of them scheduled" if queued else ""))
            return

        from engine import services

        def stop(signum: int, frame: Any) -> None:
            runner.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        click.echo(f"worker {runner.worker}: running jobs from {safe_url(crm.registry.database)}")
        # the plugins' long-running services (a PBX's events) stop with the runner
        threads = services.start(app, runner.stopping)
        if threads:
            click.echo(f"worker {runner.worker}: {len(threads)} service(s) running")
        runner.run_forever(interval if interval is not None else interval_of(crm.registry))
        for thread in threads:
            thread.join(timeout=10)
    click.echo(f"worker {runner.worker}: stopped")


@main.command()
@click.option(
    "--path",
    "path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The configuration (default: the demo company, configs/demo).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Build the database and stop.")
@handled
def demo(path: Path | None, host: str, port: int, no_serve: bool) -> None:
    """A demo company on SQLite under ./instance/ with realistic data, then serve it.

    Running it again reuses the data."""
    import os

    from engine import migrate as m
    from engine.app import create_app
    from engine.demo import DEMO_USERS, PASSWORD, Demo, has_data
    from engine.plugins import ROOT
    from engine.security import sync

    path = path or ROOT / "configs" / "demo"
    if not os.environ.get("CRM_DATABASE_URL"):
        os.environ["CRM_DATABASE_URL"] = f"sqlite:///{Path('instance').resolve() / 'demo.db'}"
    app = create_app(path)
    crm = app.extensions["crm"]
    url = crm.registry.database
    _ensure_sqlite_folder(url)
    engine = sa.create_engine(url)
    try:
        m.apply(crm.models, engine, m.plan(crm.models, engine))
    finally:
        engine.dispose()
    with app.app_context():
        sync(crm.appbuilder, crm.registry)
        sm = crm.appbuilder.sm
        ids: dict[str, int] = {}
        for username, first, last, role, _ in (
            ("admin", "Админ", "Демо", sm.auth_role_admin, 0),
            *DEMO_USERS,
        ):
            user = sm.find_user(username=username) or sm.add_user(
                username, first, last, f"{username}@demo.example.ru", [sm.find_role(role)], PASSWORD
            )
            ids[username] = user.id
        session = crm.db.session()
        if has_data(crm.models, session):
            click.echo("The demo data is there already: reusing it.")
        else:
            click.echo("Filling the demo company (a minute at most)...")
            counts = Demo(crm.models, session, ids, pm=crm.pm).fill()
            session.commit()
            click.echo("  " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    click.echo(f"\nDatabase: {safe_url(url)}")
    click.echo(f"Open http://{host}:{port}/ and log in (password `{PASSWORD}` for everyone):")
    click.echo("  admin      administrator (sees and may change everything)")
    for username, first, last, role, _ in DEMO_USERS:
        click.echo(
            f"  {username:<10} {first} {last}, {crm.registry.roles[role].label.get(crm.registry.locale)}"
        )
    if not no_serve:
        from engine.demo import mail_sink

        sink = mail_sink(crm.registry)  # the demo's mailbox sends to it (README: "Mail")
        if sink is not None:
            click.echo(f"Mail goes to a local sink on {sink.hostname}:{sink.port}: nothing leaves")
        _serve(app, host, port)


def _open_config(path: Path) -> tuple[Any, sa.Engine]:
    """The models of a configuration and an engine for its database, without
    the web app (an import or export needs no Flask)."""
    from engine.configuration import load_configuration
    from engine.models import build

    configuration = load_configuration(path)
    models = build(configuration.registry, dict(configuration.field_types))
    return models, sa.create_engine(configuration.registry.database)


def _principal(models: Any, session: Any, username: str | None) -> Any:
    """The command line is trusted: ``--user`` names the records' author, it grants nothing."""
    from engine.access import ADMIN_ROLE, Principal
    from engine.registry import USER

    if username is None:
        return None
    users = models.table(USER)
    user_id = session.execute(
        sa.select(users.c.id).where(users.c.username == username)
    ).scalar_one_or_none()
    if user_id is None:
        raise HandledError(f"there is no user `{username}`")
    return Principal(user_id, username, frozenset({ADMIN_ROLE}))


class _Bar:
    """A progress bar on stderr, made when the first batch reports how many rows to expect."""

    def __init__(self, label: str):
        self.label = label
        self.bar: Any = None
        self.shown = 0

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            if not total:
                return
            self.bar = click.progressbar(
                length=total, label=self.label, file=sys.stderr, show_pos=True, show_eta=True
            )
            self.bar.__enter__()
        self.bar.update(min(done, self.bar.length) - self.shown)
        self.shown = min(done, self.bar.length)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@main.command("import")
@CONFIG
@click.argument("doctype", metavar="TYPE")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "xlsx"]), default=None,
    help="The file's format (default: from its extension, else csv).",
)  # fmt: skip
@click.option(
    "--partial", is_flag=True,
    help="Write the good rows even when some are bad (default: all or nothing).",
)  # fmt: skip
@click.option("--user", "username", default=None, help="The login that creates the records.")
@handled
def import_command(
    path: Path, doctype: str, file: Path, fmt: str | None, partial: bool, username: str | None
) -> None:
    """Create TYPE records from the rows of a CSV or XLSX FILE (see `crm export` for the format).

    Every row is checked as a form would check it; every bad row is printed
    as FILE:LINE: field: message. Nothing is written when any row is bad,
    unless --partial."""
    from sqlalchemy.orm import Session

    from engine.transfer import import_

    models, engine = _open_config(path)
    try:
        with Session(engine) as session:
            principal = _principal(models, session, username)
            bar = _Bar(f"Importing {file.name}")
            try:
                result = import_(
                    models, session, doctype, file, fmt, principal=principal,
                    all_or_nothing=not partial, progress=bar,
                )  # fmt: skip
            finally:
                bar.close()
            if result.created:
                session.commit()
    finally:
        engine.dispose()
    for warning in result.warnings:
        click.echo(f"{file}: warning: {warning}", err=True)
    for error in result.errors:
        click.echo(f"{file}:{error}")
    label = models.registry.documents[doctype].name
    if result.more_errors:
        click.echo(f"{file}: ... and {result.more_errors} more errors", err=False)
    if not result.errors:
        click.echo(f"imported {result.created} {label} record(s) from {file}")
        return
    n = result.error_count
    summary = f"{n} error{'s' if n != 1 else ''} in {result.bad_rows} of {result.rows} row(s)"
    if not result.rows:
        summary = f"{n} error{'s' if n != 1 else ''} in the header; nothing was imported"
    elif partial:
        summary += f"; imported the other {result.created} record(s)"
    else:
        summary += "; nothing was imported (use --partial to import the good rows)"
    click.echo(summary, err=True)
    sys.exit(1)


@main.command("export")
@CONFIG
@click.argument("doctype", metavar="TYPE")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "xlsx"]), default=None,
    help="The file's format (default: from its extension, else csv).",
)  # fmt: skip
@click.option(
    "--filter", "filter_json", default=None, metavar="JSON",
    help='Only the records a filter matches, e.g. \'{"segment": "a"}\'.',
)  # fmt: skip
@click.option("--labels", is_flag=True, help="Name the columns by their labels, not their names.")
@handled
def export_command(
    path: Path, doctype: str, file: Path | None, fmt: str | None, filter_json: str | None,
    labels: bool,
) -> None:  # fmt: skip
    """Write every TYPE record to FILE (default: standard output) as CSV or XLSX.

    One row per record, a header of field names; references by the target's
    key (number, INN, email...), table fields as JSON. `crm import` reads it back."""
    import json
    import os

    from sqlalchemy.orm import Session

    from engine.transfer import export

    spec = None
    if filter_json:
        try:
            spec = json.loads(filter_json)
        except json.JSONDecodeError as exc:
            raise HandledError(f"--filter is not JSON: {exc}") from exc
    fmt = fmt or ("xlsx" if file is not None and file.suffix.lower() == ".xlsx" else "csv")
    if file is None and fmt == "xlsx" and sys.stdout.isatty():
        raise HandledError("an XLSX file is not for the terminal: give a FILE")
    models, engine = _open_config(path)
    header = "labels" if labels else "names"
    try:
        with Session(engine) as session:
            if file is None:
                export(models, session, doctype, sys.stdout.buffer, fmt, filter=spec,
                       header=header)  # fmt: skip
                sys.stdout.flush()
                return
            partial = file.with_name(f".{file.name}.part")
            try:
                count = export(models, session, doctype, partial, fmt, filter=spec, header=header)
                os.replace(partial, file)
            finally:
                partial.unlink(missing_ok=True)
    finally:
        engine.dispose()
    click.echo(f"exported {count} record(s) to {file}", err=True)


@main.group()
def users() -> None:
    """Manage the people who log in."""


@users.command("create")
@CONFIG
@click.option("--username", required=True)
@click.option("--password", required=True, prompt=True, hide_input=True)
@click.option("--first-name", default="")
@click.option("--last-name", default="")
@click.option("--email", default=None)
@click.option(
    "--role", "roles", multiple=True, help="A role from the metadata; repeat for several."
)
@click.option("--admin", is_flag=True, help="An administrator may do everything.")
@handled
def users_create(path: Path, username: str, password: str, first_name: str, last_name: str,
                 email: str | None, roles: tuple[str, ...], admin: bool) -> None:  # fmt: skip
    """Create a user with roles (run `crm migrate` first)."""
    from engine import passwords
    from engine.app import create_app
    from engine.errors import did_you_mean

    app = create_app(path)
    crm = app.extensions["crm"]
    for role in roles:
        if role not in crm.registry.roles:
            raise HandledError(f"unknown role `{role}`{did_you_mean(role, crm.registry.roles)}")
    with app.app_context():
        sm = crm.appbuilder.sm
        if sm.find_user(username=username):
            raise HandledError(f"a user `{username}` exists already")
        weak = passwords.problem(password, crm.registry.security, crm.registry.locale, username)
        if weak:
            raise HandledError(weak)
        wanted = [sm.find_role(r) for r in roles] + (
            [sm.find_role(sm.auth_role_admin)] if admin else []
        )
        if not wanted:
            raise HandledError("give the user at least one --role, or --admin")
        if any(r is None for r in wanted):
            raise HandledError("roles are missing in the database: run `crm migrate` first")
        user = sm.add_user(username, first_name or username, last_name,
                           email or f"{username}@localhost", wanted, password)  # fmt: skip
        if not user:
            raise HandledError("the user could not be created (is the email already used?)")
    click.echo(
        f"created {username} ({', '.join(roles) + (' + admin' if admin else '') if roles else 'admin'})"
    )


def _user_app(path: Path) -> tuple[Any, Any]:
    from engine.app import create_app

    app = create_app(path)
    return app, app.extensions["crm"]


def _find_user(sm: Any, username: str) -> Any:
    user = sm.find_user(username=username)
    if user is None:
        raise HandledError(f"there is no user `{username}` (see `crm users list`)")
    return user


@users.command("list")
@CONFIG
@handled
def users_list(path: Path) -> None:
    """Every user: login, name, active or disabled, roles."""
    app, crm = _user_app(path)
    with app.app_context():
        sm = crm.appbuilder.sm
        for user in sorted(sm.get_all_users(), key=lambda u: u.username):
            name = f"{user.first_name} {user.last_name}".strip()
            state = "active" if user.is_active else "disabled"
            roles = ", ".join(sorted(r.name for r in user.roles)) or "-"
            click.echo(f"{user.username}\t{name}\t{state}\t{roles}")


@users.command("set-password")
@CONFIG
@click.argument("username")
@click.option("--password", required=True, prompt=True, hide_input=True, confirmation_prompt=True)
@handled
def users_set_password(path: Path, username: str, password: str) -> None:
    """Give a user a new password (their open sessions end)."""
    from engine import passwords

    app, crm = _user_app(path)
    with app.app_context():
        sm = crm.appbuilder.sm
        user = _find_user(sm, username)
        weak = passwords.problem(password, crm.registry.security, crm.registry.locale, username)
        if weak:
            raise HandledError(weak)
        sm.reset_password(user.id, password)
    click.echo(f"new password set for {username}")


@users.command("disable")
@CONFIG
@click.argument("username")
@handled
def users_disable(path: Path, username: str) -> None:
    """Stop a user from logging in (their open sessions end); their records stay."""
    app, crm = _user_app(path)
    with app.app_context():
        sm = crm.appbuilder.sm
        user = _find_user(sm, username)
        user.active = False
        sm.update_user(user)
    click.echo(f"disabled {username}")


@users.command("roles")
@CONFIG
@click.argument("username")
@click.option(
    "--role", "roles", multiple=True, help="A role from the metadata; repeat for several."
)
@click.option("--admin", is_flag=True, help="An administrator may do everything.")
@handled
def users_roles(path: Path, username: str, roles: tuple[str, ...], admin: bool) -> None:
    """Show a user's roles, or replace them with the given ones."""
    from engine.errors import did_you_mean

    app, crm = _user_app(path)
    for role in roles:
        if role not in crm.registry.roles:
            raise HandledError(f"unknown role `{role}`{did_you_mean(role, crm.registry.roles)}")
    with app.app_context():
        sm = crm.appbuilder.sm
        user = _find_user(sm, username)
        if roles or admin:
            wanted = [sm.find_role(r) for r in roles] + (
                [sm.find_role(sm.auth_role_admin)] if admin else []
            )
            if any(r is None for r in wanted):
                raise HandledError("roles are missing in the database: run `crm migrate` first")
            user.roles = wanted
            sm.update_user(user)
        names = ", ".join(sorted(r.name for r in user.roles))
    click.echo(f"{username}: {names}")


if __name__ == "__main__":
    main()
