"""`flask units ...` and `flask routing ...`: departments and routing rules from a shell, by the
same services as `/admin/units` and `/admin/routing` (checked the same way, audited, with the
system as the actor)."""

from __future__ import annotations

from typing import Any

import click
from flask.cli import AppGroup

from dispatch import administration
from dispatch.administration import RuleInput
from gridmgmt.kernel.cli import cli_transaction

units_cli = AppGroup("units", help="Community units and departments.")
routing_cli = AppGroup("routing", help="Routing rules: which unit gets a class, where.")


@units_cli.command("add-department")
@click.argument("code")
@click.argument("name")
@click.option("--type", "unit_type", required=True, help="What it does: water, gas, roads...")
def add_department_command(code: str, name: str, unit_type: str) -> None:
    """Add a department CODE called NAME (a unit that routing rules name)."""
    with cli_transaction() as session:
        unit = administration.create_department(session, None, code, name, unit_type)
        click.echo(f"department {unit.code} ({unit.unit_type}) added")


@routing_cli.command("add")
@click.argument("category")
@click.argument("unit")
@click.option("--area", default="", help="Only in this district, street or community (code).")
@click.option("--priority", default="100", show_default=True, help="0-1000; the highest wins.")
@click.option("--note", default="")
def add_rule_command(category: str, unit: str, area: str, priority: str, note: str) -> None:
    """Send class CATEGORY (everywhere, or in --area) to unit UNIT."""
    with cli_transaction() as session:
        rule = administration.create_rule(
            session, None, RuleInput(category, area, unit, priority, note)
        )
        click.echo(f"rule {rule.id} added: {describe(administration.rule_facts(session, rule))}")


@routing_cli.command("list")
@click.option("--category", default="", help="Only this class's rules.")
def list_rules_command(category: str) -> None:
    """The rules, by class, in the order the dispatcher tries them."""
    with cli_transaction() as session:
        rules = administration.find_rules(session, category=category)
        for rule in rules:
            facts = administration.rule_facts(session, rule)
            click.echo(f"{rule.id:>5}  {describe(facts)}{'' if rule.active else '  (inactive)'}")
        if not rules:
            click.echo("no routing rules: each case goes to its community's unit")


def describe(facts: dict[str, Any]) -> str:
    """A rule (its audit facts) in one line: class → unit, where, priority."""
    where = f" in {facts['area']}" if facts["area"] else " everywhere"
    return f"{facts['category']} -> {facts['unit']}{where}, priority {facts['priority']}"
