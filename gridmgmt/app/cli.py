"""`flask demo ...`: the seeded demo city."""

from __future__ import annotations

import json
import time

import click
from flask import Flask
from flask.cli import AppGroup

from cases.views import case_context
from dispatch import readiness
from gridmgmt.app import demo, demo_history
from gridmgmt.kernel.cli import cli_transaction
from gridmgmt.kernel.db import db
from gridmgmt.kernel.queue import queues
from gridmgmt.kernel.settings import city_settings

demo_cli = AppGroup("demo", help="The seeded demo city.")
setup_cli = AppGroup("setup", help="What a working city needs.")


@demo_cli.command("seed")
@click.option("--history/--no-history", default=True, help="Replay a year of real requests.")
def seed_command(history: bool) -> None:
    """Seed the demo city (once), with a year of real requests replayed through the
    lifecycle (once), and print the demo logins."""
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    with cli_transaction() as session:
        logins = demo.seed_demo(session, say=say)
    if history:
        started = time.monotonic()
        with cli_transaction() as session:
            replayed = demo_history.seed_history(session, case_context(session), say=say)
        if replayed is not None:
            say(f"demo history seeded in {time.monotonic() - started:.1f} s")
    click.echo(f"demo logins (password {demo.DEMO_PASSWORD!r}):")
    for login in logins:
        unit = f" @ {login.unit_code}" if login.unit_code else ""
        click.echo(f"  {login.role.value:<11} {login.username}{unit}")
    click.echo(f"demo Open311 api_key: {demo.DEMO_API_KEY}")


@setup_cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check.")
def check_command(as_json: bool) -> None:
    """List what a working city needs, each ok or a problem with its fix; exit 1 when
    something blocks dispatch."""
    with db.transaction() as session:
        checks = readiness.run_checks(session, queues.redis, city_settings().calendar_code)
        session.rollback()  # read only
    for check in checks:
        if as_json:
            click.echo(json.dumps(readiness.as_json(check), ensure_ascii=False))
            continue
        state = "ok" if check.ok else ("PROBLEM" if check.blocking else "warning")
        click.echo(f"{state:<8} {check.name:<18} {check.message}")
        if not check.ok and check.fix is not None:
            click.echo(f"{'':<8} {'':<18} fix: {check.fix}")
    blocking = readiness.blocking_failures(checks)
    if blocking:
        names = ", ".join(check.name for check in blocking)
        click.echo(f"dispatch is blocked by: {names}", err=True)
        raise SystemExit(1)
    click.echo("nothing blocks dispatch", err=True)


def init_app(app: Flask) -> None:
    """Add the shell's command groups to the app's `flask` CLI."""
    app.cli.add_command(demo_cli)
    app.cli.add_command(setup_cli)
