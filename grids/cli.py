"""`flask grids ...`: import, generate and check the territory."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from gridmgmt.kernel.cli import cli_transaction, echo_progress
from grids import gridding, services
from grids.geojson import load_layer
from grids.models import Area, AreaLevel

grids_cli = AppGroup("grids", help="Territory: areas, unit grid cells, coverage checks.")


@grids_cli.command("import-units")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--level", type=click.Choice([lv.value for lv in AreaLevel]), required=True)
@click.option("--code-field", required=True, help="Property holding the area code.")
@click.option("--name-field", required=True, help="Property holding the area name.")
@click.option("--parent-code", help="Code of the parent area (short codes are appended to it).")
@click.option("--make-valid", is_flag=True, help="Repair invalid polygons instead of failing.")
def import_units_command(
    file: str,
    level: str,
    code_field: str,
    name_field: str,
    parent_code: str | None,
    make_valid: bool,
) -> None:
    """Import the polygons of a GeoJSON FILE (EPSG:4326) as districts, streets or communities."""
    with cli_transaction() as session:
        result = services.import_units(
            session,
            load_layer(file),
            level,
            code_field,
            name_field,
            parent_code=parent_code,
            make_valid=make_valid,
            progress=echo_progress(f"importing {level} areas"),
        )
    click.echo(f"{level}: {result.created} created, {result.updated} updated")


@grids_cli.command("import-cells")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--code-field", default="code", show_default=True)
@click.option("--make-valid", is_flag=True, help="Repair invalid polygons instead of failing.")
def import_cells_command(file: str, code_field: str, make_valid: bool) -> None:
    """Import real unit grid cells; each 14/15-digit code names its community."""
    with cli_transaction() as session:
        result = services.import_cells(
            session,
            load_layer(file),
            code_field,
            make_valid,
            progress=echo_progress("importing cells"),
        )
    click.echo(f"cells: {result.created} created, {result.updated} updated")


@grids_cli.command("generate-cells")
@click.option("--community", "community_code", help="Only this community (default: all).")
@click.option("--size", type=float, default=100.0, show_default=True, help="Side in metres.")
@click.option(
    "--code-length",
    type=click.Choice(["14", "15"]),
    default=str(gridding.DEFAULT_CELL_CODE_LENGTH),
    show_default=True,
    help="14 = CJ/T 213, 15 = DB11.",
)
def generate_cells_command(community_code: str | None, size: float, code_length: str) -> None:
    """Generate true SIZE×SIZE m squares (UTM) clipped to each community, and code them."""

    def report(area: Area, count: int) -> None:
        click.echo(f"  {area.code} {area.name}: {count:,} cells", err=True)

    with cli_transaction() as session:
        total = services.generate_cells(
            session, size, community_code, int(code_length), progress=report
        )
    click.echo(f"generated {total:,} cells of {size:g} m")


@grids_cli.command("check")
@click.option("--tolerance", type=float, default=1.0, show_default=True, help="In m².")
@click.option("--limit", type=int, default=20, show_default=True, help="Problems listed.")
def check_command(tolerance: float, limit: int) -> None:
    """Report gaps and overlaps between cells and communities; exit 1 when there are any."""
    with cli_transaction() as session:
        report = services.check_territory(session, tolerance)
    click.echo(f"{report.communities:,} communities, {report.cells:,} cells")
    if report.ok:
        click.echo("no gaps or overlaps above the tolerance")
        return
    kinds: dict[str, int] = {}
    for problem in report.problems:
        kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
    click.echo(", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(kinds.items())))
    for problem in report.problems[:limit]:
        click.echo(f"  {problem.describe()}")
    raise SystemExit(1)


@grids_cli.command("locate", context_settings={"ignore_unknown_options": True})
@click.argument("lon", type=float)
@click.argument("lat", type=float)
def locate_command(lon: float, lat: float) -> None:
    """Print the cell and community that contain LON LAT."""
    with cli_transaction() as session:
        where = services.locate(session, lon, lat)
    click.echo(f"cell {where.cell_code} community {where.community_code}")
