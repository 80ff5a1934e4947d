"""Reading polygon layers from GeoJSON files, with clear errors that name the bad feature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from gridmgmt.kernel.errors import InvalidInput

WGS84_NAMES = {
    "urn:ogc:def:crs:OGC:1.3:CRS84",
    "urn:ogc:def:crs:OGC::CRS84",
    "urn:ogc:def:crs:EPSG::4326",
    "EPSG:4326",
    "CRS84",
}


@dataclass(frozen=True)
class Feature:
    """One polygonal feature of a layer: its position, properties and geometry."""

    index: int
    properties: dict[str, Any]
    geometry: MultiPolygon

    def label(self, field: str | None = None) -> str:
        """A human name for error messages: 'feature 3 (code 47)'."""
        value = self.properties.get(field) if field else None
        return f"feature {self.index}" + (f" ({field} {value!r})" if value is not None else "")

    def get(self, field: str) -> str:
        """Return a property as text.

        Raises:
            InvalidInput: the property is missing or empty.
        """
        value = self.properties.get(field)
        if value is None or str(value).strip() == "":
            available = ", ".join(sorted(self.properties)) or "none"
            raise InvalidInput(
                "%(feature)s has no field %(field_name)r (fields: %(available)s)",
                field=field,
                feature=self.label(),
                field_name=field,
                available=available,
            )
        return str(value).strip()


def load_layer(path: str | Path) -> dict[str, Any]:
    """Read a GeoJSON FeatureCollection in EPSG:4326 from a file.

    Raises:
        InvalidInput: unreadable file, not a FeatureCollection, no features, or another CRS.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InvalidInput(
            "cannot read %(path)s: %(reason)s", path=path, reason=exc.strerror
        ) from None
    return parse_layer(data, str(path))


def parse_layer(data: bytes | str, path: str) -> dict[str, Any]:
    """Parse a GeoJSON FeatureCollection in EPSG:4326 (a file's or an upload's bytes).

    Args:
        data: the GeoJSON text (UTF-8 bytes or str).
        path: the file's name, for the messages.

    Raises:
        InvalidInput: not JSON, not a FeatureCollection, no features, or another CRS.
    """
    try:
        layer = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(
            "%(path)s is not valid GeoJSON: %(error)s", path=path, error=exc
        ) from None
    return _checked_layer(layer, path)


def _checked_layer(data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise InvalidInput("%(path)s is not a GeoJSON FeatureCollection", path=path)
    crs_object = data.get("crs") or {}
    crs_properties = crs_object.get("properties") if isinstance(crs_object, dict) else None
    if not isinstance(crs_object, dict) or not isinstance(crs_properties or {}, dict):
        raise InvalidInput("%(path)s: 'crs' is not a GeoJSON CRS object", path=path)
    crs = (crs_properties or {}).get("name")
    if crs is not None and crs not in WGS84_NAMES:
        raise InvalidInput(
            "%(path)s is in CRS %(crs)s; gridmgmt imports WGS 84 (EPSG:4326) only: "
            "reproject first, e.g. ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson",
            path=path,
            crs=crs,
        )
    features = data.get("features")
    if not features:
        raise InvalidInput("%(path)s has no features", path=path)
    if not isinstance(features, list):
        raise InvalidInput("%(path)s: 'features' is not a list", path=path)
    for index, feature in enumerate(features, start=1):
        if not isinstance(feature, dict) or not isinstance(feature.get("properties") or {}, dict):
            raise InvalidInput(
                "%(path)s: feature %(index)s is not a GeoJSON Feature", path=path, index=index
            )
    return data


def polygon_features(data: dict[str, Any], make_valid: bool = False) -> Iterator[Feature]:
    """Yield the layer's features as valid MultiPolygons.

    Raises:
        InvalidInput: a feature that is not a polygon, has coordinates outside WGS 84,
            or is invalid (unless `make_valid`, which repairs it and keeps its polygonal part).
    """
    for index, raw in enumerate(data["features"], start=1):
        yield polygon_feature(index, raw, make_valid)


def polygon_feature(index: int, raw: dict[str, Any], make_valid: bool = False) -> Feature:
    """The layer's `index`-th (1-based) feature `raw` as a valid MultiPolygon.

    Raises:
        InvalidInput: as `polygon_features`.
    """
    props = dict(raw.get("properties") or {})
    where = f"feature {index}"
    try:
        geom: BaseGeometry = shape(raw["geometry"])
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.ShapelyError):
        raise InvalidInput("%(where)s: missing or malformed geometry", where=where) from None
    if not isinstance(geom, Polygon | MultiPolygon) or geom.is_empty:
        raise InvalidInput(
            "%(where)s: geometry is %(geom_type)s, expected a polygon",
            where=where,
            geom_type=geom.geom_type,
        )
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise InvalidInput(
            "%(where)s: coordinates out of WGS 84 range (bounds %(bounds)s); the file is "
            "probably in a projected CRS: reproject it to EPSG:4326",
            where=where,
            bounds=geom.bounds,
        )
    if not geom.is_valid:
        if not make_valid:
            raise InvalidInput(
                "%(where)s: invalid geometry (%(why)s); fix it or import with --make-valid",
                where=where,
                why=explain_validity(geom),
            )
        geom = polygonal_part(shapely.make_valid(geom))
        if geom.is_empty:
            raise InvalidInput("%(where)s: nothing polygonal is left after repair", where=where)
    if isinstance(geom, Polygon):
        geom = MultiPolygon([geom])
    return Feature(index, props, geom)


def polygonal_part(geom: BaseGeometry) -> MultiPolygon:
    """Keep only the polygons of a geometry (a repair may leave lines or points beside them)."""
    polygons: list[Polygon] = []
    for part in getattr(geom, "geoms", [geom]):
        if isinstance(part, Polygon):
            polygons.append(part)
        elif isinstance(part, MultiPolygon):
            polygons.extend(part.geoms)
    return MultiPolygon(polygons)
