"""Reports near me: the public's list of the reports near a point or in a community, and the
open reports of one class within its duplicate radius (shown on the report page before a
person files what may already be reported).

Only the public view (`cases.public`, `cases.queries.public_cases`): cases that entered the
loop (filed and after; refused, invalid and merged reports are never listed, nor reports
still waiting for verification), their public status and text, their class and dates, the
position rounded by the coordinate policy, the distance measured from that rounded position
(so it tells no more than the position does), and how many people support each. Never the
reporter, their contact, a description or an internal note.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from cases import public, queries, support
from cases.models import Case, Category
from cases.status import OPEN_STATUSES
from gridmgmt.kernel.errors import InvalidInput, NotFound
from grids.models import Area

DEFAULT_RADIUS_M = 500
MAX_RADIUS_M = 2000
PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_PAGE = 500
LISTED = sorted(s.value for s in public.LISTED_STATUSES)
OPEN_LISTED = sorted(s.value for s in public.LISTED_STATUSES if s in OPEN_STATUSES)
STATES = ("all", "open", "closed")
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class NearbyQuery:
    """What the public asks: near a point (within a radius) or in a community; one class or
    all; open, closed or all; a page. `duplicates`: the open reports of `category` within
    its duplicate radius and window (the report page's panel)."""

    lon: float | None = None
    lat: float | None = None
    radius_m: int = DEFAULT_RADIUS_M
    community: str | None = None  # an area code of level community
    category: str | None = None  # a class code
    state: str = "all"
    page: int = 1
    page_size: int = PAGE_SIZE
    duplicates: bool = False


def _number(args: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    raw = str(args.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput("%(name)s must be a number", field=name, name=name) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidInput(
            "%(name)s must be between %(low)s and %(high)s", field=name, name=name, low=low,
            high=high,
        )  # fmt: skip
    return value


def _whole(args: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = str(args.get(name) or "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidInput(
            "%(name)s must be a whole number from %(low)s to %(high)s", field=name, name=name,
            low=low, high=high,
        )  # fmt: skip
    return int(raw)


def parse_query(args: Mapping[str, Any]) -> NearbyQuery:
    """The query from a request's parameters: `lon`, `lat`, `radius` (metres) or `community`
    (its code); `category` (a class code), `state` (all, open, closed), `page`, `page_size`;
    `duplicates=1` with a point and a class.

    Raises:
        InvalidInput: neither a point nor a community, a half point, a value out of range.
    """
    lon = _number(args, "lon", -180, 180)
    lat = _number(args, "lat", -90, 90)
    if (lon is None) != (lat is None):
        raise InvalidInput("give both lon and lat", field="lat" if lat is None else "lon")
    community = str(args.get("community") or "").strip() or None
    if lon is None and community is None:
        raise InvalidInput("give a point (lon and lat) or a community", field="lon")
    state = str(args.get("state") or "all").strip()
    if state not in STATES:
        raise InvalidInput("state is one of %(states)s", field="state", states=", ".join(STATES))
    category = str(args.get("category") or "").strip() or None
    duplicates = str(args.get("duplicates") or "").strip() in ("1", "true", "yes")
    if duplicates and (lon is None or category is None):
        raise InvalidInput("possible duplicates need a point and a class", field="category")
    if category is not None and len(category) > 16:
        raise InvalidInput("unknown class %(code)r", field="category", code=category[:16])
    if community is not None and len(community) > 32:
        raise InvalidInput("no community %(code)r", field="community", code=community[:32])
    return NearbyQuery(
        lon=lon,
        lat=lat,
        radius_m=_whole(args, "radius", DEFAULT_RADIUS_M, 1, MAX_RADIUS_M),
        community=community,
        category=category,
        state="open" if duplicates else state,
        page=_whole(args, "page", 1, 1, MAX_PAGE),
        page_size=_whole(args, "page_size", PAGE_SIZE, 1, MAX_PAGE_SIZE),
        duplicates=duplicates,
    )


@dataclass(frozen=True)
class NearbyItem:
    """One report as the public sees it near a place."""

    view: queries.PublicCase
    distance_m: int | None  # from the asked point to the rounded position, to 10 m
    supporters: int

    def as_json(self, lang: str, translate: Any, track_url: str) -> dict[str, Any]:
        """The JSON the endpoint answers with (`translate`: the reader's gettext)."""
        case = self.view.case
        category = case.category
        return {
            "number": case.number,
            "category": category.code,
            "category_name": category.name_zh if lang == "zh" else category.name_en,
            "status": self.view.status.value,
            "status_text": translate(self.view.text),
            "open": self.view.status not in public.CLOSED_STATUSES,
            "reported_at": case.reported_at.isoformat(),
            "updated_at": case.updated_at.isoformat(),
            "lon": self.view.lon,
            "lat": self.view.lat,
            "distance_m": self.distance_m,
            "supporters": self.supporters,
            "url": track_url,
        }


@dataclass(frozen=True)
class NearbyPage:
    """A page of reports, the radius used and whether another page follows."""

    items: list[NearbyItem]
    query: NearbyQuery
    radius_m: int | None  # None: in a community
    has_more: bool
    community_name: str | None = None
    community_id: int | None = None  # the community asked for (its page offers to follow it)


def metres_between(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """The great-circle distance between two points (haversine), in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _near(lon: float, lat: float, radius_m: float) -> Any:
    """Cases within `radius_m` of the point: a box for the GiST index of `location`, then the
    exact distance on the geography (see `cases.queries._DUPLICATES`)."""
    point = func.ST_SetSRID(func.ST_MakePoint(lon, lat), 4326)
    degrees = radius_m / (110574.0 * max(math.cos(math.radians(abs(lat))), 0.01))
    return Case.location.op("&&")(func.ST_Expand(point, degrees)) & func.ST_DWithin(
        func.Geography(Case.location), func.Geography(point), radius_m
    )


def find_nearby(session: Session, query: NearbyQuery, decimals: int, now: datetime) -> NearbyPage:
    """A page of the reports the query asks for, in their public view: near a point the
    nearest first for duplicates, else the newest first.

    Raises:
        NotFound: no such community or class.
    """
    statuses = OPEN_LISTED if query.state == "open" else LISTED
    if query.state == "closed":
        statuses = sorted(set(LISTED) - set(OPEN_LISTED))
    select_cases = select(Case).where(Case.status.in_(statuses))
    radius: int | None = query.radius_m
    community_name: str | None = None
    community_id: int | None = None
    if query.category is not None:
        category = session.scalar(select(Category).where(Category.code == query.category))
        if category is None:
            raise NotFound("unknown class %(code)r", code=query.category)
        select_cases = select_cases.where(Case.category_id == category.id)
        if query.duplicates:
            radius = category.duplicate_radius_m
            window = timedelta(hours=category.duplicate_window_hours)
            select_cases = select_cases.where(Case.reported_at >= now - window)
    if query.community is not None:
        area = session.scalar(
            select(Area).where(Area.code == query.community, Area.level == "community")
        )
        if area is None:
            raise NotFound("no community %(code)r", code=query.community)
        select_cases = select_cases.where(Case.community_id == area.id)
        community_name, community_id = area.name, area.id
        if query.lon is None:
            radius = None
    if query.lon is not None and query.lat is not None and radius is not None:
        select_cases = select_cases.where(_near(query.lon, query.lat, radius))
    if query.duplicates and query.lon is not None and query.lat is not None:
        point = func.ST_SetSRID(func.ST_MakePoint(query.lon, query.lat), 4326)
        order = [func.ST_Distance(func.Geography(Case.location), func.Geography(point)), Case.id]
    else:
        order = [Case.reported_at.desc(), Case.id.desc()]
    rows = list(
        session.scalars(
            select_cases.options(selectinload(Case.category))
            .order_by(*order)
            .offset((query.page - 1) * query.page_size)
            .limit(query.page_size + 1)
        )
    )
    has_more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    views = queries.public_cases(session, rows, decimals)
    counts = support.supporter_counts(session, [c.id for c in rows])
    items = []
    for view in views:
        distance = None
        if query.lon is not None and query.lat is not None:
            metres = metres_between(query.lon, query.lat, view.lon, view.lat)
            distance = int(round(metres, -1))
        items.append(NearbyItem(view, distance, counts.get(view.case.id, 0)))
    return NearbyPage(items, query, radius, has_more, community_name, community_id)
