"""`flask categories ...`: the component and event catalogue."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from cases.catalogue import DEFAULT_CATALOGUE, load_catalogue
from gridmgmt.kernel.cli import cli_transaction

categories_cli = AppGroup("categories", help="The category catalogue (component/event classes).")


@categories_cli.command("load")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def load_command(file: str | None) -> None:
    """Load FILE (default: the shipped catalogue); loading twice changes nothing."""
    with cli_transaction() as session:
        result = load_catalogue(session, file or DEFAULT_CATALOGUE)
    click.echo(
        f"categories: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )
