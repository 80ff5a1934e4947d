"""Pure rules of the territory: grid codes, area codes, UTM zones and cell numbering.

No Flask, no database: these functions are unit-tested on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gridmgmt.kernel.errors import InvalidInput

# Width of each area level's full code (DB11 / CJ/T 213): county 6 + street 3 + community 3.
LEVEL_CODE_WIDTH = {"district": 6, "street": 9, "community": 12}
# Cell sequence width by code form: CJ/T 213 (14 digits) and DB11 (15 digits).
SEQUENCE_WIDTH = {14: 2, 15: 3}
DEFAULT_CELL_CODE_LENGTH = 15

_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class CellCode:
    """A parsed unit grid cell code."""

    code: str
    county: str
    street: str
    community: str
    sequence: int

    @property
    def community_code(self) -> str:
        """The 12-digit code of the community that owns the cell."""
        return self.county + self.street + self.community


def parse_cell_code(code: str) -> CellCode:
    """Validate a 14-digit (CJ/T 213) or 15-digit (DB11) cell code and split it.

    Raises:
        InvalidInput: not all digits, wrong length, or a zero sequence.
    """
    code = code.strip()
    if not _DIGITS.fullmatch(code) or len(code) not in SEQUENCE_WIDTH:
        raise InvalidInput(
            "grid cell code %(code)r must be 14 digits (CJ/T 213) or 15 digits (DB11)",
            field="code",
            code=code,
        )
    sequence = int(code[12:])
    if sequence == 0:
        raise InvalidInput(
            "grid cell code %(code)r has sequence 0; sequences start at 1", code=code
        )
    return CellCode(code, code[:6], code[6:9], code[9:12], sequence)


def max_cells(length: int = DEFAULT_CELL_CODE_LENGTH) -> int:
    """How many cells a community can number with `length`-digit codes."""
    return 10 ** SEQUENCE_WIDTH[length] - 1


def cell_code(community_code: str, sequence: int, length: int = DEFAULT_CELL_CODE_LENGTH) -> str:
    """Compose a cell code from a 12-digit community code and a 1-based sequence.

    Raises:
        InvalidInput: the community code is not 12 digits or the sequence does not fit.
    """
    if length not in SEQUENCE_WIDTH:
        raise InvalidInput("cell codes are 14 or 15 digits, not %(length)s", length=length)
    if not _DIGITS.fullmatch(community_code) or len(community_code) != 12:
        raise InvalidInput(
            "community code %(community_code)r must be 12 digits to number its cells",
            community_code=community_code,
        )
    if not 1 <= sequence <= max_cells(length):
        raise InvalidInput(
            "community %(community_code)s needs cell number %(sequence)s, but a "
            "%(length)s-digit code holds at most %(most)s cells per community: "
            "use larger cells",
            community_code=community_code,
            sequence=sequence,
            length=length,
            most=max_cells(length),
        )
    return f"{community_code}{sequence:0{SEQUENCE_WIDTH[length]}d}"


def area_code(level: str, raw: str, parent_code: str | None = None) -> str:
    """Return the full numeric code of an area, composing short local codes with the parent's.

    A district code is 6 digits (GB/T 2260 county). A street adds 3 digits, a community 3 more.
    A short local code ("47") under a parent ("440106001") becomes "440106001047".

    Raises:
        InvalidInput: unknown level, non-numeric code, wrong length, or not under the parent.
    """
    if level not in LEVEL_CODE_WIDTH:
        raise InvalidInput(
            "unknown level %(level)r; use district, street or community", level=level
        )
    raw = str(raw).strip()
    width = LEVEL_CODE_WIDTH[level]
    if not _DIGITS.fullmatch(raw):
        raise InvalidInput(
            "%(level)s code %(raw)r is not numeric", field="code", level=level, raw=raw
        )
    if parent_code is not None and len(raw) <= 3:
        raw = parent_code + raw.zfill(3)
    if len(raw) != width:
        if parent_code:
            raise InvalidInput(
                "%(level)s code %(raw)r must be %(width)s digits",
                field="code",
                level=level,
                raw=raw,
                width=width,
            )
        raise InvalidInput(
            "%(level)s code %(raw)r must be %(width)s digits "
            "(or give a short local code with --parent-code)",
            field="code",
            level=level,
            raw=raw,
            width=width,
        )
    if parent_code is not None and not raw.startswith(parent_code):
        raise InvalidInput(
            "%(level)s code %(raw)s does not start with its parent's code %(parent_code)s",
            level=level,
            raw=raw,
            parent_code=parent_code,
        )
    return raw


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing (lon, lat): 326xx north, 327xx south."""
    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise InvalidInput("(%(lon)s, %(lat)s) is outside the UTM range", lon=lon, lat=lat)
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


LON_RANGE = (-180.0, 180.0)  # WGS 84 degrees
LAT_RANGE = (-90.0, 90.0)


def check_lon_lat(lon: float, lat: float) -> tuple[float, float]:
    """Validate a WGS 84 coordinate pair and return it as floats.

    Raises:
        InvalidInput: not numbers, NaN, or out of range.
    """
    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        raise InvalidInput(
            "coordinates must be numbers, got (%(lon)r, %(lat)r)", lon=lon, lat=lat
        ) from None
    if not (LON_RANGE[0] <= x <= LON_RANGE[1]) or not (LAT_RANGE[0] <= y <= LAT_RANGE[1]):
        raise InvalidInput(
            "coordinates (%(lon)s, %(lat)s) are out of range: longitude -180..180, "
            "latitude -90..90",
            lon=lon,
            lat=lat,
        )
    return x, y
