"""`flask demo ...`: the seeded demo city."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from gridmgmt.app import demo
from gridmgmt.kernel.cli import cli_transaction

demo_cli = AppGroup("demo", help="The seeded demo city.")


@demo_cli.command("seed")
def seed_command() -> None:
    """Seed the demo city (once) and print the demo logins."""
    with cli_transaction() as session:
        logins = demo.seed_demo(session, say=lambda line: click.echo(line, err=True))
    click.echo(f"demo logins (password {demo.DEMO_PASSWORD!r}):")
    for login in logins:
        unit = f" @ {login.unit_code}" if login.unit_code else ""
        click.echo(f"  {login.role.value:<11} {login.username}{unit}")
    click.echo(f"demo Open311 api_key: {demo.DEMO_API_KEY}")


def init_app(app: Flask) -> None:
    """Add the shell's command groups to the app's `flask` CLI."""
    app.cli.add_command(demo_cli)
