"""Shared plumbing of the `flask` commands: one transaction each, domain errors as messages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from sqlalchemy.orm import Session

from gridmgmt.db import db
from gridmgmt.errors import DomainError


@contextmanager
def cli_transaction() -> Iterator[Session]:
    """Run a command's work in one transaction; a domain error rolls back and exits with 1."""
    try:
        with db.transaction() as session:
            yield session
    except DomainError as err:
        raise click.ClickException(f"{err.message} (nothing was changed)") from None


def echo_progress(label: str) -> Callable[[int, int], None]:
    """Return a `(done, total)` callback printing progress lines to stderr."""

    def report(done: int, total: int) -> None:
        click.echo(f"{label}: {done:,}/{total:,}", err=True)

    return report
