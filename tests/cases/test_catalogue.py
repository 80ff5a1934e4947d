"""The category catalogue: cases.catalogue.load_catalogue and `flask categories load`."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases.catalogue import (
    DEFAULT_CATALOGUE,
    KIND_PREFIX,
    LoadResult,
    UrgentPolicy,
    load_catalogue,
    urgent_policy,
)
from cases.models import Category, CategoryKind, MajorClass
from gridmgmt.kernel.errors import InvalidInput

SHIPPED_MINORS = 95
SHIPPED_MAJORS = 12
CODE = re.compile(r"^[CE][0-9]{2}[0-9]{2}$")


def shipped() -> dict[str, Any]:
    return json.loads(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))


def counts(session: Session) -> tuple[int, int]:
    return (
        session.scalar(select(func.count()).select_from(MajorClass)) or 0,
        session.scalar(select(func.count()).select_from(Category)) or 0,
    )


def snapshot(session: Session) -> dict[str, tuple[Any, ...]]:
    """Every category's code with the values a load can change."""
    session.expire_all()
    return {
        c.code: (c.name_zh, c.name_en, c.limit_value, c.limit_unit, c.unit_type, c.keywords)
        for c in session.scalars(select(Category))
    }


def write(tmp_path: Path, data: Any, name: str = "catalogue.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def loaded(session: Session) -> dict[str, tuple[Any, ...]]:
    """The shipped catalogue, committed (a failing command cannot roll it back)."""
    load_catalogue(session)
    session.commit()
    return snapshot(session)


def test_default_catalogue_loads(session: Session) -> None:
    result = load_catalogue(session)

    assert result == LoadResult(created=SHIPPED_MINORS, updated=0, unchanged=0)
    majors, categories = counts(session)
    assert majors == SHIPPED_MAJORS
    assert categories >= 60
    assert categories == SHIPPED_MINORS
    kinds = session.execute(select(MajorClass.kind, func.count()).group_by(MajorClass.kind)).all()
    assert dict(kinds) == {"component": 6, "event": 6}
    for major in session.scalars(select(MajorClass)):
        assert major.name_zh.strip() and major.name_en.strip(), major.code
        assert major.categories, f"{major.kind} {major.code} has no minor classes"


def test_every_category_named_and_coded(session: Session) -> None:
    load_catalogue(session)

    categories = session.scalars(select(Category)).all()
    assert len(categories) == SHIPPED_MINORS
    for category in categories:
        assert category.name_zh.strip(), category.code
        assert category.name_en.strip(), category.code
        assert CODE.match(category.code), category.code
        prefix = KIND_PREFIX[CategoryKind(category.major.kind)]
        assert category.code == f"{prefix}{category.major.code}{category.minor_code}"
        assert category.limit_value > 0
    codes = {c.code for c in categories}
    assert {"C0101", "E0102"} <= codes
    water_cover = next(c for c in categories if c.code == "C0101")
    assert water_cover.name_zh == "上水井盖"
    assert water_cover.unit_type == "water"
    assert (water_cover.limit_value, water_cover.limit_unit) == (Decimal("2"), "hours")


def test_loading_twice_changes_nothing(session: Session) -> None:
    load_catalogue(session)
    before, values = counts(session), snapshot(session)

    again = load_catalogue(session)

    assert again == LoadResult(created=0, updated=0, unchanged=SHIPPED_MINORS)
    assert counts(session) == before
    assert snapshot(session) == values


def test_cli_load_default_then_file(cli: FlaskCliRunner, session: Session) -> None:
    first = cli.invoke(args=["categories", "load"])

    assert first.exit_code == 0, first.output
    assert f"categories: {SHIPPED_MINORS} created, 0 updated, 0 unchanged" in first.output
    assert counts(session) == (SHIPPED_MAJORS, SHIPPED_MINORS)

    second = cli.invoke(args=["categories", "load", str(DEFAULT_CATALOGUE)])

    assert second.exit_code == 0, second.output
    assert f"categories: 0 created, 0 updated, {SHIPPED_MINORS} unchanged" in second.output
    assert counts(session) == (SHIPPED_MAJORS, SHIPPED_MINORS)


def test_changed_limit_updates_one_class(
    cli: FlaskCliRunner, session: Session, loaded: dict[str, tuple[Any, ...]], tmp_path: Path
) -> None:
    data = shipped()
    minor = data["majors"][0]["minors"][0]  # C0101, 2 hours
    minor["limit"] = {"value": 3, "unit": "hours"}

    result = cli.invoke(args=["categories", "load", str(write(tmp_path, data))])

    assert result.exit_code == 0, result.output
    assert f"0 created, 1 updated, {SHIPPED_MINORS - 1} unchanged" in result.output
    after = snapshot(session)
    assert after["C0101"][2] == Decimal("3")
    assert {k: v for k, v in after.items() if k != "C0101"} == {
        k: v for k, v in loaded.items() if k != "C0101"
    }


def test_new_class_in_file_is_created(
    session: Session, loaded: dict[str, tuple[Any, ...]], tmp_path: Path
) -> None:
    data = shipped()
    extra = copy.deepcopy(data["majors"][0]["minors"][0])
    extra.update(code="99", name_zh="测试", name_en="Test class")
    data["majors"][0]["minors"].append(extra)

    result = load_catalogue(session, write(tmp_path, data))

    assert result == LoadResult(created=1, updated=0, unchanged=SHIPPED_MINORS)
    assert snapshot(session)["C0199"][1] == "Test class"


# Each breaker gets a copy of the shipped catalogue in which C0101's limit was already changed
# and a new class C0199 added, so a load that kept part of the file would show.
Breaker = Callable[[dict[str, Any]], Any]


def _last_minor(data: dict[str, Any]) -> dict[str, Any]:
    return data["majors"][-1]["minors"][-1]


def _set_major(key: str, value: Any) -> Breaker:
    """Set `key` of the first major class."""

    def breaker(data: dict[str, Any]) -> dict[str, Any]:
        data["majors"][0][key] = value
        return data

    return breaker


def _set(key: str, value: Any) -> Breaker:
    def breaker(data: dict[str, Any]) -> dict[str, Any]:
        _last_minor(data)[key] = value
        return data

    return breaker


def _drop_majors(data: dict[str, Any]) -> dict[str, Any]:
    del data["majors"]
    return data


def _duplicate_minor(data: dict[str, Any]) -> dict[str, Any]:
    data["majors"][-1]["minors"].append(copy.deepcopy(_last_minor(data)))
    return data


def _bad_major_code(data: dict[str, Any]) -> dict[str, Any]:
    data["majors"][-1]["code"] = "7"
    return data


def _missing_name(data: dict[str, Any]) -> dict[str, Any]:
    del _last_minor(data)["name_en"]
    return data


BAD: dict[str, tuple[Breaker, str]] = {
    "malformed-json": (lambda data: json.dumps(data)[:-20], "is not valid JSON"),
    "unknown-unit-type": (_set("unit_type", "spaceport"), "unknown unit_type 'spaceport'"),
    "three-digit-minor": (_set("code", "101"), "a minor code is 2 digits"),
    "negative-limit": (_set("limit", {"value": -1, "unit": "hours"}), "above 0"),
    "zero-limit": (_set("limit", {"value": 0, "unit": "days"}), "above 0"),
    "bad-limit-unit": (_set("limit", {"value": 1, "unit": "weeks"}), "a limit is"),
    "missing-majors": (_drop_majors, "no 'majors' list"),
    "one-digit-major": (_bad_major_code, "2-digit code"),
    "missing-name": (_missing_name, "missing name_en"),
    "duplicate-minor": (_duplicate_minor, "listed twice in the file"),
    "word-radius": (_set("duplicate_radius_m", "fifty"), "duplicate_radius_m is a whole number"),
    "negative-window": (_set("duplicate_window_hours", -1), "duplicate_window_hours is a whole"),
    "keywords-not-a-list": (_set("keywords", "pothole"), "keywords is a list of str"),
    "attribute-not-an-object": (_set("attributes", ["depth"]), "attributes is a list of dict"),
    "attribute-without-code": (
        _set("attributes", [{"datatype": "number"}]),
        "every attribute needs a 'code'",
    ),
    "minors-not-a-list": (_set_major("minors", {"01": {}}), "needs a list of minor classes"),
    "major-not-an-object": (lambda data: {"majors": [*data["majors"], ["x"]]}, "needs a list"),
    "citizens-urgent": (
        lambda data: {**data, "urgent_roles": ["operator", "citizen"]},
        "urgent_roles may not name citizen",
    ),
    "unknown-urgent-role": (
        lambda data: {**data, "urgent_roles": ["mayor"]},
        "urgent_roles is a list of roles",
    ),
    "urgent-keys-not-a-flag": (
        lambda data: {**data, "urgent_trusted_api_keys": "yes"},
        "urgent_trusted_api_keys is true or false",
    ),
}


def _bad_file(tmp_path: Path, breaker: Breaker) -> Path:
    data = shipped()
    data["majors"][0]["minors"][0]["limit"] = {"value": 7, "unit": "days"}
    extra = copy.deepcopy(data["majors"][0]["minors"][0])
    extra.update(code="99", name_zh="测试", name_en="Test class")
    data["majors"][0]["minors"].append(extra)
    return write(tmp_path, breaker(data), "bad.json")


@pytest.mark.parametrize("name", list(BAD))
def test_bad_file_refused_and_nothing_changed(
    cli: FlaskCliRunner,
    session: Session,
    loaded: dict[str, tuple[Any, ...]],
    tmp_path: Path,
    name: str,
) -> None:
    breaker, message = BAD[name]
    path = _bad_file(tmp_path, breaker)

    result = cli.invoke(args=["categories", "load", str(path)])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception  # a message, no traceback
    assert message in result.output
    assert "nothing was changed" in result.output
    assert counts(session) == (SHIPPED_MAJORS, SHIPPED_MINORS)
    assert snapshot(session) == loaded


def test_missing_file_refused(cli: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    result = cli.invoke(args=["categories", "load", str(tmp_path / "absent.json")])

    assert result.exit_code == 1
    assert "cannot read" in result.output
    assert counts(session) == (0, 0)


def test_bad_file_refused_by_function(session: Session, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown unit_type"):
        load_catalogue(session, _bad_file(tmp_path, _set("unit_type", "spaceport")))


def test_duplicate_minor_code_is_clear_error(
    cli: FlaskCliRunner, session: Session, loaded: dict[str, tuple[Any, ...]], tmp_path: Path
) -> None:
    data = shipped()
    data["majors"][0]["minors"].append(
        {**copy.deepcopy(data["majors"][0]["minors"][0]), "code": "99"}
    )
    data["majors"][0]["minors"].append(
        {**copy.deepcopy(data["majors"][0]["minors"][0]), "code": "99"}
    )

    result = cli.invoke(args=["categories", "load", str(write(tmp_path, data))])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert "99: listed twice in the file" in result.output
    assert counts(session) == (SHIPPED_MAJORS, SHIPPED_MINORS)


def test_oversized_limit_is_clear_error(
    cli: FlaskCliRunner, session: Session, loaded: dict[str, tuple[Any, ...]], tmp_path: Path
) -> None:
    path = _bad_file(tmp_path, _set("limit", {"value": 1_000_000, "unit": "hours"}))

    result = cli.invoke(args=["categories", "load", str(path)])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert "nothing was changed" in result.output
    assert snapshot(session) == loaded


def test_the_shipped_urgent_policy(tmp_path: Path) -> None:
    policy = urgent_policy()
    assert policy == UrgentPolicy(frozenset({"inspector", "operator"}), True)
    assert [policy.allows(r) for r in ("inspector", "operator", "citizen", "dispatcher")] == [
        True,
        True,
        False,
        False,
    ]
    assert policy.allows(None, trusted=True) and not policy.allows(None, trusted=False)
    data = shipped()
    data.update(urgent_roles=["inspector"], urgent_trusted_api_keys=False)
    strict = urgent_policy(write(tmp_path, data))
    assert not strict.allows("operator") and not strict.allows(None, trusted=True)
    del data["urgent_roles"], data["urgent_trusted_api_keys"]
    assert urgent_policy(write(tmp_path, data, "plain.json")) == UrgentPolicy()
