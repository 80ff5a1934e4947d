"""Which unit handles a case: routing rules as data, the owning community as the default.

Pure: callers pass the candidate rules and the case's areas; nothing here touches the session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# How specific a rule's area is: a community rule beats a street rule beats a district rule
# beats a city-wide rule, at equal priority.
SPECIFICITY = {"community": 3, "street": 2, "district": 1, None: 0}


@dataclass(frozen=True)
class RuleView:
    """A routing rule as the router sees it."""

    id: int
    category_id: int
    area_id: int | None
    area_level: str | None
    unit_id: int
    unit_active: bool
    priority: int


@dataclass(frozen=True)
class Route:
    """The chosen unit and why: the rule that decided it, or the default community unit."""

    unit_id: int
    rule_id: int | None
    reason: str


@dataclass(frozen=True)
class Unroutable:
    """No unit can be chosen; the case goes to the dispatcher's board with this reason."""

    reason: str


def choose_unit(
    category_id: int,
    area_ids: Sequence[int],
    rules: Iterable[RuleView],
    community_unit: tuple[int, bool] | None,
) -> Route | Unroutable:
    """Pick the unit for a case of `category_id` lying in the areas `area_ids`.

    The matching rule with the highest priority wins (then the most specific area, then the
    lowest id, so the choice is deterministic); inactive units are skipped. Without a rule,
    the community unit owning the cell handles it.

    Args:
        category_id: the case's minor class.
        area_ids: the community, street and district containing the case (empty: outside).
        rules: candidate rules (any category; non-matching ones are ignored).
        community_unit: (unit id, active) of the owning community, or None.
    """
    if not area_ids:
        return Unroutable("outside every unit grid cell")
    matching = [
        r
        for r in rules
        if r.category_id == category_id and (r.area_id is None or r.area_id in area_ids)
    ]
    matching.sort(key=lambda r: (-r.priority, -SPECIFICITY.get(r.area_level, 0), r.id))
    for rule in matching:
        if rule.unit_active:
            where = f"area {rule.area_id}" if rule.area_id else "city-wide"
            return Route(
                rule.unit_id, rule.id, f"rule {rule.id} ({where}, priority {rule.priority})"
            )
    if matching:
        ids = ", ".join(str(r.id) for r in matching)
        return Unroutable(f"the units of the matching routing rules ({ids}) are inactive")
    if community_unit is None:
        return Unroutable("no routing rule and no community unit for this cell")
    unit_id, active = community_unit
    if not active:
        return Unroutable(f"the community unit {unit_id} owning the cell is inactive")
    return Route(unit_id, None, "default: the community that owns the cell")
