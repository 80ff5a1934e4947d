"""Territory use cases: import areas and cells, generate cells, check coverage, locate points."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from geoalchemy2.shape import from_shape
from shapely.geometry import MultiPolygon
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gridmgmt.kernel.audit import AuditAction, record_change
from gridmgmt.kernel.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    OutsideTerritory,
)
from gridmgmt.kernel.models import Unit, UnitKind, UnitType, User
from grids import gridding
from grids.geojson import Feature, polygon_feature, polygon_features
from grids.models import Area, AreaLevel, GridCell

Progress = Callable[[int, int], None]
# Clipping leaves numerical slivers where a boundary runs along a grid line; parts smaller
# than this are noise, not cells.
MIN_PART_M2 = 0.01
FRAGMENT_SHARE = 0.1
# Overlays run in fixed precision (2^-30° ≈ 0.1 mm): a floating overlay of a cell edge that
# nearly follows a boundary edge falls back to snapping and can invent centimetre-wide slivers.
# A power of two, so that every function rounds a coordinate to the very same double and
# neighbouring cells share their vertices exactly (with 1e-9 they differ in the last bit).
PRECISION_DEG = 2.0**-30
PARENT_LEVEL = {AreaLevel.STREET: AreaLevel.DISTRICT, AreaLevel.COMMUNITY: AreaLevel.STREET}


@dataclass(frozen=True)
class Location:
    """The unit grid cell (and its community) that contains a point."""

    cell_id: int
    cell_code: str
    community_id: int
    community_code: str


@dataclass
class ImportResult:
    """What an import did."""

    created: int = 0
    updated: int = 0
    codes: list[str] = field(default_factory=list)


def _no_progress(_done: int, _total: int) -> None:
    """Default progress callback: silent."""


def _find_parent(session: Session, level: AreaLevel, parent_code: str | None) -> Area | None:
    if parent_code is None:
        return None
    parent = session.scalar(select(Area).where(Area.code == parent_code))
    if parent is None:
        raise NotFound(
            "parent area %(parent_code)s does not exist: import it first", parent_code=parent_code
        )
    expected = PARENT_LEVEL.get(level)
    if expected is None or parent.level != expected:
        raise InvalidInput(
            "a %(level)s cannot have parent %(parent_code)s (%(parent_level)s); its "
            "parent must be a %(expected)s",
            level=level.value,
            parent_code=parent_code,
            parent_level=parent.level,
            expected=expected.value if expected else "nothing",
        )
    return parent


@dataclass(frozen=True)
class FeatureProblem:
    """One problem of one feature of a layer (a feature may have several)."""

    index: int  # 1-based position in the file
    code: str | None  # the feature's code property as written, when it has one
    error: DomainError


@dataclass
class LayerImport:
    """What the import of a checked layer did: its features' problems (then nothing was
    imported, `result` is None) or the import's result."""

    total: int  # features in the layer
    problems: list[FeatureProblem] = field(default_factory=list)
    result: ImportResult | None = None

    @property
    def rejected(self) -> int:
        """How many features have problems."""
        return len({p.index for p in self.problems})


def _unit_rows(
    session: Session,
    layer: dict[str, Any],
    level: AreaLevel,
    code_field: str,
    name_field: str,
    parent_code: str | None,
    make_valid: bool,
    problems: list[FeatureProblem] | None,
) -> dict[str, tuple[Feature, str]]:
    """The layer's features by full code, with their names. With `problems` None the first
    problem raises (the command line's way); else each problem of each feature (its geometry,
    its code, its name) is appended to `problems` and the feature left out."""

    def problem(index: int, raw_code: Any, error: DomainError) -> None:
        if problems is None:
            raise error
        problems.append(FeatureProblem(index, None if raw_code is None else str(raw_code), error))

    rows: dict[str, tuple[Feature, str]] = {}
    for index, raw in enumerate(layer["features"], start=1):
        raw_code = (raw.get("properties") or {}).get(code_field)
        feature: Feature | None = None
        code = name = None
        try:
            feature = polygon_feature(index, raw, make_valid=make_valid)
        except DomainError as err:
            problem(index, raw_code, err)
        checked = feature or Feature(index, dict(raw.get("properties") or {}), MultiPolygon())
        try:
            code = gridding.area_code(level.value, checked.get(code_field), parent_code)
            if code in rows:
                raise InvalidInput(
                    "%(feature)s: code %(code)s appears twice in the file (also feature %(other)s)",
                    feature=checked.label(code_field),
                    code=code,
                    other=rows[code][0].index,
                )
        except DomainError as err:
            code = None
            problem(index, raw_code, err)
        try:
            name = checked.get(name_field)
        except DomainError as err:
            problem(index, raw_code, err)
        if feature is not None and code is not None and name is not None:
            rows[code] = (feature, name)
    others = session.execute(
        select(Area.code, Area.level).where(Area.code.in_(list(rows)), Area.level != level.value)
    ).all()
    for code, area_level in others:
        problem(
            rows[code][0].index,
            rows[code][0].properties.get(code_field),
            Conflict(
                "code %(code)s already belongs to a %(area_level)s, not a %(level)s",
                code=code,
                area_level=area_level,
                level=level.value,
            ),
        )
        del rows[code]
    return rows


def import_units(
    session: Session,
    layer: dict[str, Any],
    level: AreaLevel | str,
    code_field: str,
    name_field: str,
    parent_code: str | None = None,
    make_valid: bool = False,
    progress: Progress = _no_progress,
) -> ImportResult:
    """Import (or refresh, by code) the polygons of a GeoJSON layer as areas of one level.

    Communities also get their community unit (the default handler of their cells).
    Everything happens in the caller's transaction: one bad feature and nothing is kept.
    """
    level = AreaLevel(level)
    parent = _find_parent(session, level, parent_code)
    total = len(layer["features"])
    rows = _unit_rows(
        session, layer, level, code_field, name_field, parent_code, make_valid, problems=None
    )
    result = ImportResult()
    existing = {a.code: a for a in session.scalars(select(Area).where(Area.code.in_(list(rows))))}
    for done, (code, (feature, name)) in enumerate(rows.items(), start=1):
        area = existing.get(code)
        geom = from_shape(feature.geometry, srid=4326)
        if area is None:
            area = Area(
                code=code, level=level.value, name=name, parent=parent, geom=geom, area_m2=0
            )
            session.add(area)
            result.created += 1
        else:
            area.name, area.parent, area.geom = name, parent, geom
            result.updated += 1
        result.codes.append(code)
        if done % 500 == 0 or done == total:
            session.flush()
            progress(done, total)
    session.execute(
        text("UPDATE areas SET area_m2 = ST_Area(geom::geography) WHERE code = ANY(:codes)"),
        {"codes": result.codes},
    )
    if level == AreaLevel.COMMUNITY:
        ensure_community_units(session, result.codes)
    return result


def check_units(
    session: Session,
    layer: dict[str, Any],
    level: AreaLevel | str,
    code_field: str,
    name_field: str,
    parent_code: str | None = None,
    make_valid: bool = False,
) -> list[FeatureProblem]:
    """Every problem of every feature that `import_units` would refuse, without importing.

    Raises:
        NotFound, InvalidInput: the parent area is missing or of the wrong level.
    """
    level = AreaLevel(level)
    _find_parent(session, level, parent_code)
    problems: list[FeatureProblem] = []
    _unit_rows(session, layer, level, code_field, name_field, parent_code, make_valid, problems)
    return problems


def ensure_community_units(session: Session, community_codes: list[str]) -> int:
    """Create the community unit of each community that has none; return how many were made."""
    areas = session.scalars(
        select(Area)
        .where(Area.code.in_(community_codes))
        .where(~select(Unit.id).where(Unit.community_id == Area.id).exists())
    ).all()
    for area in areas:
        session.add(
            Unit(
                code=area.code,
                name=area.name,
                kind=UnitKind.COMMUNITY.value,
                unit_type=UnitType.COMMUNITY.value,
                community=area,
            )
        )
    session.flush()
    return len(areas)


def import_cells(
    session: Session,
    layer: dict[str, Any],
    code_field: str = "code",
    make_valid: bool = False,
    progress: Progress = _no_progress,
) -> ImportResult:
    """Import (or refresh, by code) real unit grid cells; each code names its community.

    Raises:
        InvalidInput: bad code, a multi-part cell, or a community that does not exist.
    """
    total = len(layer["features"])
    communities = dict(
        session.execute(select(Area.code, Area.id).where(Area.level == AreaLevel.COMMUNITY)).all()
    )
    rows: dict[str, tuple[int, Feature]] = {}
    for feature in polygon_features(layer, make_valid=make_valid):
        parsed = gridding.parse_cell_code(feature.get(code_field))
        if len(feature.geometry.geoms) != 1:
            raise InvalidInput(
                "%(feature)s: a cell must be one polygon", feature=feature.label(code_field)
            )
        community_id = communities.get(parsed.community_code)
        if community_id is None:
            raise InvalidInput(
                "%(feature)s: community %(community)s (the code's first 12 digits) does not "
                "exist: import the communities first",
                feature=feature.label(code_field),
                community=parsed.community_code,
            )
        if parsed.code in rows:
            raise InvalidInput(
                "%(feature)s: code appears twice in the file", feature=feature.label(code_field)
            )
        rows[parsed.code] = (community_id, feature)
    result = ImportResult()
    existing = {
        c.code: c for c in session.scalars(select(GridCell).where(GridCell.code.in_(list(rows))))
    }
    for done, (code, (community_id, feature)) in enumerate(rows.items(), start=1):
        geom = from_shape(feature.geometry.geoms[0], srid=4326)
        cell = existing.get(code)
        if cell is None:
            session.add(GridCell(code=code, community_id=community_id, geom=geom, area_m2=0))
            result.created += 1
        else:
            cell.community_id, cell.geom = community_id, geom
            result.updated += 1
        result.codes.append(code)
        if done % 1000 == 0 or done == total:
            session.flush()
            progress(done, total)
    session.execute(
        text("UPDATE grid_cells SET area_m2 = ST_Area(geom::geography) WHERE code = ANY(:codes)"),
        {"codes": result.codes},
    )
    return result


def territory_epsg(session: Session) -> int:
    """The UTM zone of the centre of all communities: one metric grid for the whole city."""
    centre = territory_centre(session)
    if centre is None:
        raise NotFound("there are no communities: import them first")
    return gridding.utm_epsg(*centre)


# Squares are laid out in the metric (UTM) grid, then clipped in EPSG:4326 against the stored
# boundary: clipping in UTM would bend the community's long edges (a straight lon/lat edge is
# not straight in UTM) and leave cells a few m² outside their community. For the same reason the
# grid covers the boundary's metric extent plus 1 m: in EPSG:4326 an edge may bulge past it.
_CLIP_SQL = text("""
CREATE TEMP TABLE cell_parts ON COMMIT DROP AS
WITH community AS (
    SELECT geom AS g, ST_Transform(geom, :epsg) AS metric FROM areas WHERE id = :community_id
), squares AS (
    SELECT s.i, s.j, ST_ReducePrecision(ST_Transform(s.geom, 4326), :grid) AS sq, community.g
    FROM community, LATERAL ST_SquareGrid(:size, ST_Expand(community.metric, 1.0)) AS s
    WHERE ST_DWithin(s.geom, community.metric, 1.0)
), parts AS (
    SELECT i, j, (ST_Dump(
               CASE WHEN ST_CoveredBy(sq, g) THEN sq
                    ELSE ST_CollectionExtract(ST_Intersection(sq, g, :grid), 3) END
           )).geom AS geom
    FROM squares
)
SELECT row_number() OVER () AS id, i, j, geom, ST_Area(geom::geography) AS m2
FROM parts
""")

# A fragment smaller than a tenth of a square (a clipped corner, or the sliver left where a
# straight lon/lat boundary bulges past a grid line) joins the neighbour it shares the longest
# border with, as city cell layers do.
_MERGE_SQL = [
    text("""
        CREATE TEMP TABLE cell_merges ON COMMIT DROP AS
        SELECT DISTINCT ON (small.id) small.id AS small_id, big.id AS into_id
        FROM cell_parts small
        JOIN cell_parts big ON big.m2 >= :fragment AND big.geom && small.geom
        CROSS JOIN LATERAL ST_Length(ST_Intersection(small.geom, big.geom)) AS border
        WHERE small.m2 < :fragment AND border > 0
        ORDER BY small.id, border DESC, big.id
    """),
    text("""
        CREATE TEMP TABLE cell_merged ON COMMIT DROP AS
        SELECT m.into_id, ST_UnaryUnion(ST_Collect(p.geom), :grid) AS geom
        FROM (SELECT into_id, small_id AS part_id FROM cell_merges
              UNION SELECT into_id, into_id FROM cell_merges) AS m
        JOIN cell_parts p ON p.id = m.part_id
        GROUP BY m.into_id
    """),
    text("DELETE FROM cell_merged WHERE GeometryType(geom) <> 'POLYGON'"),
    text("""
        UPDATE cell_parts big SET geom = merged.geom, m2 = ST_Area(merged.geom::geography)
        FROM cell_merged merged WHERE big.id = merged.into_id
    """),
    text("""
        DELETE FROM cell_parts WHERE id IN (
            SELECT small_id FROM cell_merges JOIN cell_merged USING (into_id))
    """),
]

_NUMBER_SQL = text("""
    INSERT INTO grid_cells (code, community_id, geom, area_m2)
    SELECT :prefix || lpad(
               row_number() OVER (
                   ORDER BY j DESC, i, ST_X(ST_PointOnSurface(geom)),
                            ST_Y(ST_PointOnSurface(geom)) DESC
               )::text, :width, '0'),
           :community_id, geom, m2
    FROM cell_parts
    WHERE m2 > :min_area
""")


def generate_cells(
    session: Session,
    size: float = 100.0,
    community_code: str | None = None,
    code_length: int = gridding.DEFAULT_CELL_CODE_LENGTH,
    progress: Callable[[Area, int], None] | None = None,
) -> int:
    """Generate square cells of `size` metres (UTM), clipped to each community, and code them.

    Cells are numbered west→east within rows, rows north→south, per community. A community's
    old cells are replaced. Returns the number of cells made.

    Raises:
        InvalidInput: bad size, or a community that needs more cells than its codes can hold.
        Conflict: old cells that cases refer to.
    """
    if not 1 <= size <= 10_000:
        raise InvalidInput("cell size must be between 1 and 10000 metres, not %(size)s", size=size)
    query = select(Area).where(Area.level == AreaLevel.COMMUNITY).order_by(Area.code)
    if community_code is not None:
        query = query.where(Area.code == community_code)
    communities = session.scalars(query).all()
    if not communities and community_code:
        raise NotFound("community %(code)s does not exist", code=community_code)
    if not communities:
        raise NotFound("no communities")
    epsg = territory_epsg(session)
    width = gridding.SEQUENCE_WIDTH[code_length]
    total = 0
    for area in communities:
        gridding.cell_code(area.code, 1, code_length)  # validates the community code early
        _delete_cells(session, area)
        params = {
            "epsg": epsg,
            "community_id": area.id,
            "size": size,
            "grid": PRECISION_DEG,
            "fragment": FRAGMENT_SHARE * size * size,
        }
        session.execute(_CLIP_SQL, params)
        for statement in _MERGE_SQL:
            session.execute(statement, params)
        count = (
            session.scalar(
                text("SELECT count(*) FROM cell_parts WHERE m2 > :min_area"),
                {"min_area": MIN_PART_M2},
            )
            or 0
        )
        if count > gridding.max_cells(code_length):
            raise InvalidInput(
                "community %(code)s (%(name)s) needs %(count)s cells of %(size)g m, but a "
                "%(code_length)s-digit code holds at most %(most)s: use a larger --size",
                code=area.code,
                name=area.name,
                count=count,
                size=size,
                code_length=code_length,
                most=gridding.max_cells(code_length),
            )
        session.execute(
            _NUMBER_SQL,
            {"prefix": area.code, "width": width, "community_id": area.id, "min_area": MIN_PART_M2},
        )
        session.execute(text("DROP TABLE cell_parts, cell_merges, cell_merged"))
        total += count
        if progress:
            progress(area, count)
    return total


def _delete_cells(session: Session, area: Area) -> None:
    in_use = session.scalar(
        text("""SELECT count(*) FROM cases c JOIN grid_cells g ON g.id = c.cell_id
                WHERE g.community_id = :id"""),
        {"id": area.id},
    )
    if in_use:
        raise Conflict(
            "community %(code)s has cells that %(in_use)s cases refer to; its cells "
            "cannot be regenerated",
            code=area.code,
            in_use=in_use,
        )
    session.execute(text("DELETE FROM grid_cells WHERE community_id = :id"), {"id": area.id})


def cell_at(point: str) -> str:
    """SQL of the one cell holding the point expression `point` (id, code, community_id), for a
    LATERAL join: every cell whose closed polygon holds it, the lowest code winning. The one
    place the tie-break rule is written; `locate`, reports and dispatch all use it."""
    return f"""
        SELECT id, code, community_id FROM grid_cells
        WHERE ST_Intersects(geom, {point}) ORDER BY code LIMIT 1
    """


_LOCATE_SQL = text(f"""
SELECT g.id, g.code, a.id, a.code
FROM (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS geom) AS p
CROSS JOIN LATERAL ({cell_at("p.geom")}) AS g
JOIN areas a ON a.id = g.community_id
""")


def outside_territory(lon: float, lat: float) -> OutsideTerritory:
    """The error of a point in no cell."""
    return OutsideTerritory(
        "(%(lon)s, %(lat)s) is outside the territory: no unit grid cell there", lon=lon, lat=lat
    )


def locate(session: Session, lon: float, lat: float) -> Location:
    """Return the one cell containing (lon, lat).

    Rule: a point belongs to every cell whose closed polygon contains it (interior or
    boundary); when it lies on a shared edge or corner, the cell with the lowest code wins.
    With generated cells that is the northern cell across a horizontal edge and the western
    one across a vertical edge; across communities, the lower community code.

    Raises:
        InvalidInput: coordinates that are not WGS 84 numbers.
        OutsideTerritory: the point is in no cell.
    """
    x, y = gridding.check_lon_lat(lon, lat)
    row = session.execute(_LOCATE_SQL, {"lon": x, "lat": y}).first()
    if row is None:
        raise outside_territory(x, y)
    return Location(*row)


@dataclass(frozen=True)
class Problem:
    """One coverage defect found by `check_territory`."""

    kind: str  # cell_overlap | cell_outside | community_gap | community_overlap
    first: str
    second: str | None
    area_m2: float
    lon: float
    lat: float
    shape: str | None = None  # the defect itself as GeoJSON, when asked for (maps)

    def describe(self) -> str:
        """One line for people."""
        what = {
            "cell_overlap": f"cells {self.first} and {self.second} overlap",
            "cell_outside": f"cell {self.first} reaches outside its community",
            "community_gap": f"community {self.first} is not covered by its cells",
            "community_overlap": f"communities {self.first} and {self.second} overlap",
        }[self.kind]
        return f"{what}: {self.area_m2:,.1f} m² near ({self.lon:.6f}, {self.lat:.6f})"


@dataclass
class TerritoryReport:
    """Coverage of the territory: counts and the defects above the tolerance."""

    communities: int
    cells: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        """True when no gaps or overlaps were found."""
        return not self.problems


_CHECK_QUERIES = {
    "cell_overlap": """
        SELECT a.code, b.code, ST_Intersection(a.geom, b.geom, :grid) AS g
        FROM grid_cells a JOIN grid_cells b
          ON a.id < b.id AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, '2********')""",
    "community_overlap": """
        SELECT a.code, b.code, ST_Intersection(a.geom, b.geom, :grid) AS g
        FROM areas a JOIN areas b
          ON a.id < b.id AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, '2********')
        WHERE a.level = 'community' AND b.level = 'community'""",
    "cell_outside": """
        SELECT g.code, NULL, ST_Difference(g.geom, a.geom, :grid) AS g
        FROM grid_cells g JOIN areas a ON a.id = g.community_id
        WHERE NOT ST_CoveredBy(g.geom, a.geom)""",
    "community_gap": """
        SELECT a.code, NULL, ST_Difference(a.geom, COALESCE(
                 (SELECT ST_Union(c.geom, :grid) FROM grid_cells c WHERE c.community_id = a.id),
                 'SRID=4326;POLYGON EMPTY'::geometry), :grid) AS g
        FROM areas a WHERE a.level = 'community'""",
}


def check_territory(
    session: Session,
    tolerance_m2: float = 1.0,
    kinds: Iterable[str] = tuple(_CHECK_QUERIES),
    shapes: bool = False,
) -> TerritoryReport:
    """Find overlaps between cells and between communities, cells outside their community,
    and parts of communities that no cell covers, each larger than `tolerance_m2` (with
    `shapes`, each problem also carries its geometry as GeoJSON, simplified to ~1 m)."""
    problems: list[Problem] = []
    # The polygonal part only: an intersection may bring lines and points beside its area.
    shape_sql = (
        "ST_AsGeoJSON(ST_SimplifyPreserveTopology(ST_CollectionExtract(g, 3), 0.00001), 7)"
        if shapes
        else "NULL"
    )
    for kind in kinds:
        sql = _CHECK_QUERIES[kind]
        rows = session.execute(
            text(f"""
                SELECT first, second, m2, ST_X(p), ST_Y(p), {shape_sql} FROM (
                    SELECT first, second, g, ST_Area(g::geography) AS m2,
                           ST_PointOnSurface(g) AS p
                    FROM ({sql}) AS found(first, second, g)
                    WHERE NOT ST_IsEmpty(g)
                ) AS measured
                WHERE m2 > :tolerance ORDER BY m2 DESC
            """),
            {"tolerance": tolerance_m2, "grid": PRECISION_DEG},
        )
        problems.extend(Problem(kind, *row) for row in rows)
    communities = session.scalar(
        select(func.count()).select_from(Area).where(Area.level == AreaLevel.COMMUNITY)
    )
    cells = session.scalar(select(func.count()).select_from(GridCell))
    return TerritoryReport(communities or 0, cells or 0, problems)


def territory_centre(session: Session) -> tuple[float, float] | None:
    """(lon, lat) of the centre of all communities, for the first view of a map."""
    row = session.execute(
        select(
            func.ST_X(func.ST_Centroid(func.ST_Extent(Area.geom))),
            func.ST_Y(func.ST_Centroid(func.ST_Extent(Area.geom))),
        ).where(Area.level == AreaLevel.COMMUNITY)
    ).one()
    return None if row[0] is None else (row[0], row[1])


def community_outlines(session: Session, tolerance_deg: float = 0.00005) -> dict[str, Any]:
    """The communities as a GeoJSON FeatureCollection, simplified (~5 m) for maps; each
    feature's `label` is the (lon, lat) where its name reads best (the centre of the largest
    circle inside it: a centroid can fall outside a crescent-shaped community)."""
    features = session.scalar(
        text("""
            SELECT json_build_object('type', 'FeatureCollection', 'features',
                   COALESCE(json_agg(json_build_object(
                       'type', 'Feature',
                       'properties', json_build_object(
                           'code', code, 'name', name,
                           'label', json_build_array(round(ST_X(label)::numeric, 6),
                                                     round(ST_Y(label)::numeric, 6))),
                       'geometry', ST_AsGeoJSON(shape, 7)::json)
                   ORDER BY code), '[]'::json))
            FROM (SELECT code, name, shape, (ST_MaximumInscribedCircle(shape)).center AS label
                  FROM (SELECT code, name, ST_SimplifyPreserveTopology(geom, :tolerance) AS shape
                        FROM areas WHERE level = 'community') simplified) labelled
        """),
        {"tolerance": tolerance_deg},
    )
    return dict(features)


# A map asks for the cells of one small box at a time (grids.views: at most 0.05° a side,
# about 5 km); more than this many cells in one answer is a box no map screen needs.
CELLS_MAX = 3000


def cells_in_box(
    session: Session,
    box: tuple[float, float, float, float],
    limit: int = CELLS_MAX,
) -> dict[str, Any]:
    """The unit grid cells that meet a (west, south, east, north) box in degrees, as a GeoJSON
    FeatureCollection for maps: each cell's `code`, and `label`, the (lon, lat) of a point
    inside it where the code reads. At most `limit` cells, by code; `truncated` says whether
    there were more."""
    rows = session.execute(
        text("""
            SELECT json_build_object(
                'type', 'Feature',
                'properties', json_build_object(
                    'code', code,
                    'label', json_build_array(round(ST_X(ST_PointOnSurface(geom))::numeric, 6),
                                              round(ST_Y(ST_PointOnSurface(geom))::numeric, 6))),
                'geometry', ST_AsGeoJSON(geom, 6)::json)
            FROM grid_cells
            WHERE geom && ST_MakeEnvelope(:west, :south, :east, :north, 4326)
            ORDER BY code
            LIMIT :limit
        """),
        dict(zip(("west", "south", "east", "north"), box, strict=True), limit=limit + 1),
    ).scalars()
    features = list(rows)
    return {
        "type": "FeatureCollection",
        "features": features[:limit],
        "truncated": len(features) > limit,
    }


# ---------------------------------------------------------------- the administration page


@dataclass(frozen=True)
class AreaSummary:
    """One area as the territory page lists it: its cells (and communities, for a district or
    a street: those below it) and, for a community, its community unit."""

    id: int
    level: str
    code: str
    name: str
    parent_code: str | None
    area_m2: float
    communities: int
    cells: int
    unit_code: str | None
    unit_name: str | None
    unit_active: bool | None


_SUMMARY_SQL = text("""
    SELECT a.id, a.level, a.code, a.name, a.parent_id, p.code, a.area_m2,
           COALESCE(c.cells, 0), u.code, u.name, u.active
    FROM areas a
    LEFT JOIN areas p ON p.id = a.parent_id
    LEFT JOIN (SELECT community_id, count(*) AS cells FROM grid_cells GROUP BY community_id) c
      ON c.community_id = a.id
    LEFT JOIN units u ON u.community_id = a.id
    ORDER BY a.code
""")


def territory_summary(session: Session) -> list[AreaSummary]:
    """Every area, by code, with its cell count; districts and streets count the communities
    and cells below them (one query, rolled up here: a city has a few thousand areas)."""
    rows = session.execute(_SUMMARY_SQL).all()
    parents = {row[0]: row[4] for row in rows}
    communities: dict[int, int] = {}
    cells: dict[int, int] = {}
    for row in rows:
        if row[1] != AreaLevel.COMMUNITY.value:
            continue
        seen: set[int] = set()
        above = parents.get(row[0])
        while above is not None and above not in seen:  # `seen`: a cycle cannot hang the page
            seen.add(above)
            communities[above] = communities.get(above, 0) + 1
            cells[above] = cells.get(above, 0) + row[7]
            above = parents.get(above)
    return [
        AreaSummary(
            id=row[0],
            level=row[1],
            code=row[2],
            name=row[3],
            parent_code=row[5],
            area_m2=row[6],
            communities=communities.get(row[0], 0),
            cells=row[7] if row[1] == AreaLevel.COMMUNITY.value else cells.get(row[0], 0),
            unit_code=row[8],
            unit_name=row[9],
            unit_active=row[10],
        )
        for row in rows
    ]


def _level_count(session: Session, level: AreaLevel) -> int:
    return session.scalar(select(func.count()).select_from(Area).where(Area.level == level)) or 0


def upload_units(
    session: Session,
    actor: User | None,
    layer: dict[str, Any],
    level: AreaLevel | str,
    code_field: str,
    name_field: str,
    parent_code: str | None = None,
    make_valid: bool = False,
    source: str = "",
) -> LayerImport:
    """Check every feature of a layer; when none has a problem, import it as `import_units`
    does and write the audit row, in the caller's transaction (the administration page's
    import). A layer with problems is not imported at all: they are returned, every one.

    Raises:
        NotFound, InvalidInput: the parent area is missing or of the wrong level.
    """
    level = AreaLevel(level)
    outcome = LayerImport(len(layer["features"]))
    outcome.problems = check_units(
        session, layer, level, code_field, name_field, parent_code, make_valid
    )
    if outcome.problems:
        return outcome
    before = {"level": level.value, "areas": _level_count(session, level)}
    result = import_units(
        session, layer, level, code_field, name_field, parent_code, make_valid=make_valid
    )
    after = {
        "name": source or None,
        "level": level.value,
        "areas": _level_count(session, level),
        "created": result.created,
        "updated": result.updated,
        "parent_code": parent_code,
        "make_valid": make_valid,
    }
    record_change(
        session, actor, AuditAction.TERRITORY_IMPORTED, "territory", level.value, before, after
    )
    outcome.result = result
    return outcome


@dataclass
class CellsMade:
    """What one generation made: the cells of each community, by code."""

    size: float
    total: int = 0
    communities: dict[str, tuple[str, int]] = field(default_factory=dict)  # code: (name, cells)


def make_cells(
    session: Session,
    actor: User | None,
    size: float,
    community_code: str | None = None,
    code_length: int = gridding.DEFAULT_CELL_CODE_LENGTH,
) -> CellsMade:
    """Generate cells as `generate_cells` does (one community, or all) and write the audit
    row in the caller's transaction (the administration page's generation).

    Raises:
        as `generate_cells`.
    """
    if code_length not in gridding.SEQUENCE_WIDTH:
        raise InvalidInput("cell codes are 14 or 15 digits, not %(length)s", length=code_length)
    old_cells = select(func.count()).select_from(GridCell)
    area = None
    if community_code is not None:
        area = session.scalar(
            select(Area).where(Area.code == community_code, Area.level == AreaLevel.COMMUNITY)
        )
        if area is None:
            raise NotFound("community %(code)s does not exist", code=community_code)
        old_cells = old_cells.where(GridCell.community_id == area.id)
    before_cells = session.scalar(old_cells) or 0
    made = CellsMade(size)

    def count(done: Area, cells: int) -> None:
        made.communities[done.code] = (done.name, cells)

    made.total = generate_cells(session, size, community_code, code_length, progress=count)
    settings = {"cell_size_m": size, "code_length": code_length}
    if area is not None:
        facts = {"name": area.name, "code": area.code}
        record_change(
            session,
            actor,
            AuditAction.CELLS_GENERATED,
            "area",
            area.id,
            {**facts, "cells": before_cells},
            {**facts, "cells": made.total, **settings},
        )
    else:
        communities = len(made.communities)
        record_change(
            session,
            actor,
            AuditAction.CELLS_GENERATED,
            "territory",
            "all",
            {"communities": communities, "cells": before_cells},
            {"communities": communities, "cells": made.total, **settings},
        )
    return made
