"""Pure territory rules: cell codes, area codes, UTM zones, coordinates."""

from __future__ import annotations

import math

import pytest

from gridmgmt.kernel.errors import InvalidInput
from grids import gridding


@pytest.mark.parametrize(
    ("code", "community", "sequence"),
    [
        ("110105001001042", "110105001001", 42),  # DB11, 15 digits
        ("11010500100142", "110105001001", 42),  # CJ/T 213, 14 digits
        ("990100006046999", "990100006046", 999),
    ],
)
def test_parse_cell_code_splits_the_hierarchy(code: str, community: str, sequence: int) -> None:
    parsed = gridding.parse_cell_code(code)
    assert parsed.community_code == community
    assert parsed.sequence == sequence
    assert parsed.county == code[:6]


@pytest.mark.parametrize(
    "code",
    ["", "1101050010010", "1101050010010421", "11010500100104a", "110105001001000", " 12 "],
)
def test_parse_cell_code_refuses_bad_codes(code: str) -> None:
    with pytest.raises(InvalidInput):
        gridding.parse_cell_code(code)


def test_cell_code_pads_the_sequence_for_each_form() -> None:
    assert gridding.cell_code("990100006046", 7) == "990100006046007"
    assert gridding.cell_code("990100006046", 7, length=14) == "99010000604607"


@pytest.mark.parametrize(("sequence", "length"), [(0, 15), (1000, 15), (100, 14)])
def test_cell_code_refuses_sequences_that_do_not_fit(sequence: int, length: int) -> None:
    with pytest.raises(InvalidInput, match="cell"):
        gridding.cell_code("990100006046", sequence, length)


def test_cell_code_needs_a_12_digit_community() -> None:
    with pytest.raises(InvalidInput, match="12 digits"):
        gridding.cell_code("47", 1)


@pytest.mark.parametrize(
    ("level", "raw", "parent", "expected"),
    [
        ("district", "110105", None, "110105"),
        ("street", "1", "110105", "110105001"),
        ("community", "47", "990100006", "990100006047"),
        ("community", "990100006047", "990100006", "990100006047"),
        ("community", "990100006047", None, "990100006047"),
    ],
)
def test_area_code_composes_short_codes_with_the_parent(
    level: str, raw: str, parent: str | None, expected: str
) -> None:
    assert gridding.area_code(level, raw, parent) == expected


@pytest.mark.parametrize(
    ("level", "raw", "parent", "message"),
    [
        ("community", "47", None, "12 digits"),
        ("district", "11010", None, "6 digits"),
        ("street", "x1", "110105", "not numeric"),
        ("community", "110106001047", "110105001", "parent"),
        ("county", "110105", None, "unknown level"),
    ],
)
def test_area_code_refuses_bad_codes(
    level: str, raw: str, parent: str | None, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        gridding.area_code(level, raw, parent)


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (-118.3, 34.0, 32611),  # Los Angeles
        (116.4, 39.9, 32650),  # Beijing
        (-71.06, 42.36, 32619),  # Boston
        (151.2, -33.9, 32756),  # Sydney
        (180.0, 0.0, 32660),
    ],
)
def test_utm_epsg(lon: float, lat: float, epsg: int) -> None:
    assert gridding.utm_epsg(lon, lat) == epsg


@pytest.mark.parametrize(
    ("lon", "lat"), [(181, 0), (0, 91), (-180.5, 0), (math.nan, 0), ("abc", 1), (None, 1)]
)
def test_check_lon_lat_refuses_out_of_range_and_non_numbers(lon: object, lat: object) -> None:
    with pytest.raises(InvalidInput):
        gridding.check_lon_lat(lon, lat)  # type: ignore[arg-type]


def test_check_lon_lat_accepts_strings_of_numbers() -> None:
    assert gridding.check_lon_lat("-118.25", "34.05") == (-118.25, 34.05)  # type: ignore[arg-type]
