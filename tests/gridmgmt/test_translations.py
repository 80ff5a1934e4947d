"""Every English text a page can show has a Chinese translation, with the same placeholders.

Two sources of text: the literals passed to `_(...)` / `gettext(...)` in templates and code
(found by scanning), and the labels built at run time, such as
`_(action.value|replace('_', ' ')|capitalize)`: enumerated per family from the enums (or
lists) they come from, or read from the literal tuple a template loops over. A new run-time
call that no family covers fails too. A missing entry would silently show English on a
Chinese page; these tests name it instead.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Formatter

import pytest
from flask import Flask
from jinja2 import Environment
from werkzeug.exceptions import default_exceptions

from cases.lifecycle import SYSTEM, Action, PendingRequest, RejectReason
from cases.models import CaseSource, CaseStatus, CategoryKind
from dispatch.views import recent_hotspots
from gridmgmt.kernel import i18n
from gridmgmt.kernel.business_calendar import LimitUnit
from gridmgmt.kernel.errors import DomainError
from gridmgmt.kernel.models import Role
from gridmgmt.kernel.web import ANONYMOUS_MENU, MENU
from grids.models import AreaLevel
from maps.views import map_labels
from tests.support import fresh_request_globals

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gridmgmt", "cases", "dispatch", "grids", "maps")
SKIPPED_DIRS = {"node_modules", "__pycache__", "var", "venv"}
ZH = i18n.TRANSLATIONS["zh"]

# `_("text")` or `gettext('text', name=...)`: a string literal as the whole first argument.
# `_("Asks for " ~ x)` or `_(label)` are built at run time: they are covered by the families.
STRING = r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'"""
CALL = re.compile(r"(?<![\w.])(?:_|gettext)\(\s*(" + STRING + r")\s*[,)]")


def template_files() -> Iterator[Path]:
    """Every `**/templates/**/*.html` of the project (not of the virtualenv or hidden dirs)."""
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_DIRS)
        folder = Path(dirpath)
        if "templates" not in folder.relative_to(ROOT).parts:
            continue
        yield from (folder / name for name in sorted(filenames) if name.endswith(".html"))


def python_files() -> Iterator[Path]:
    """Every Python module of the application packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
                yield path


def source_strings() -> dict[str, list[str]]:
    """Each translatable literal → where it occurs ("path:line")."""
    found: dict[str, list[str]] = {}
    for path in [*template_files(), *python_files()]:
        text = path.read_text(encoding="utf-8")
        for match in CALL.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            found.setdefault(ast.literal_eval(match.group(1)), []).append(where)
    return found


def test_scan_finds_strings_of_templates_and_code() -> None:
    found = source_strings()
    # One from a template, one with single quotes, one from Python, one with a placeholder.
    for english in ("Report a problem", "Case number", "Wrong username or password."):
        assert english in found, english
    assert "Position: {lon}, {lat}" in found
    assert "Asks for " not in found  # `_("Asks for " ~ x)` is dynamic, not a literal


def test_every_source_string_has_a_chinese_translation() -> None:
    missing = {english: where for english, where in source_strings().items() if english not in ZH}
    listing = "\n".join(
        f"  {english!r}  ({', '.join(where)})" for english, where in missing.items()
    )
    assert not missing, f"{len(missing)} English strings without a zh translation:\n{listing}"


def placeholders(text: str) -> list[str]:
    """The `{fields}` of a format string, sorted (`{{` and `}}` are literal braces)."""
    return sorted(field for _, field, _, _ in Formatter().parse(text) if field is not None)


@pytest.mark.parametrize("english", sorted(ZH))
def test_translation_keeps_placeholders(english: str) -> None:
    chinese = ZH[english]
    assert chinese.strip(), f"empty translation of {english!r}"
    assert placeholders(chinese) == placeholders(english), f"{english!r} → {chinese!r}"


def _render(expression: str) -> Callable[[str], str]:
    """A function rendering a template `expression` of `v`, with Jinja's own filters."""
    template = Environment(autoescape=False).from_string("{{ " + expression + " }}")
    return lambda value: template.render(v=value)


def _domain_error_codes() -> set[str]:
    """The codes of every DomainError subclass of the application (modules imported first)."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            importlib.import_module(info.name)
    codes = {DomainError.code}
    pending = [DomainError]
    while pending:
        for sub in pending.pop().__subclasses__():
            codes.add(sub.code)
            pending.append(sub)
    return codes


def _http_error_codes() -> set[str]:
    """The codes `errors._http` makes of werkzeug's HTTP errors, and its "error" fallback."""
    names = [exc().name for exc in default_exceptions.values()]
    return {"error"} | {(name or "error").lower().replace(" ", "_") for name in names}


def _hotspot_kinds() -> list[str]:
    """The place kinds `recent_hotspots` writes in SQL: `CASE ... 'community' ... END AS kind`."""
    case = re.search(r"CASE\b(.*?)\bEND AS kind", inspect.getsource(recent_hotspots), re.S)
    assert case, "recent_hotspots no longer computes `kind` with CASE ... END AS kind"
    return re.findall(r"'(\w+)'", case.group(1))


def _values(enum: type) -> list[str]:
    return [member.value for member in enum]


WORDS = _render("v|replace('_', ' ')|capitalize")
CAPITALIZED = _render("v|capitalize")
AS_IS = _render("v")

# Family → the English labels pages render, built with the templates' own expressions.
DYNAMIC: dict[str, Callable[[], list[str]]] = {
    "CaseStatus (status_label)": lambda: [i18n.status_label(s) for s in CaseStatus],
    "Action (buttons, timeline)": lambda: [WORDS(v) for v in _values(Action)],
    "RejectReason": lambda: [WORDS(v) for v in _values(RejectReason)],
    "CaseSource": lambda: [CAPITALIZED(v) for v in _values(CaseSource)],
    "CategoryKind": lambda: [CAPITALIZED(v) for v in _values(CategoryKind)],
    "Role and system (timeline)": lambda: [AS_IS(v) for v in [*_values(Role), SYSTEM]],
    "PendingRequest": lambda: [_render("'Asks for ' ~ v")(v) for v in _values(PendingRequest)],
    "LimitUnit (pending_unit)": lambda: [AS_IS(v) for v in _values(LimitUnit)],
    "Error codes (error.html)": lambda: [
        WORDS(code) for code in sorted(_domain_error_codes() | _http_error_codes())
    ],
    "Hotspot kinds (board.html)": lambda: [CAPITALIZED(v) for v in _hotspot_kinds()],
    "AreaLevel": lambda: [CAPITALIZED(v) for v in _values(AreaLevel)],
    "Map words (maps.views.map_labels)": lambda: list(map_labels().values()),
    "Menu labels (base.html)": lambda: [
        label for entries in [*MENU.values(), ANONYMOUS_MENU] for label, _ in entries
    ],
}


@pytest.mark.parametrize("family", sorted(DYNAMIC))
def test_dynamic_labels_have_translations(family: str) -> None:
    labels = DYNAMIC[family]()
    assert labels, family
    missing = sorted({label for label in labels if label not in ZH})
    assert not missing, f"{family}: no zh translation of {missing}"


def test_rendered_labels_look_as_on_the_pages() -> None:
    assert i18n.status_label("in_progress") == "In progress"
    assert WORDS(Action.REPORT_DONE.value) == "Report done"
    assert WORDS(RejectReason.NOT_CITY_PROBLEM.value) == "Not city problem"
    assert CAPITALIZED(CaseSource.OPEN311.value) == "Open311"
    assert WORDS("request_entity_too_large") == "Request entity too large"


# Every `_(...)` / `gettext(...)` whose argument is built at run time, by file, and the family
# of DYNAMIC that covers its values. One over a literal loop, such as
# `{% for s in ("open", "closed") %}{{ _(s|capitalize) }}`, is checked directly instead.
KNOWN_DYNAMIC: dict[tuple[str, str], str] = {
    ("cases/templates/cases/_action.html", "r.value|replace('_', ' ')|capitalize"): (
        "RejectReason"
    ),
    ("cases/templates/cases/_action.html", "action.value|replace('_', ' ')|capitalize"): (
        "Action (buttons, timeline)"
    ),
    ("cases/templates/cases/_macros.html", '"Asks for " ~ case.pending_request'): (
        "PendingRequest"
    ),
    ("cases/templates/cases/board.html", "h.kind|capitalize"): "Hotspot kinds (board.html)",
    ("cases/templates/cases/case.html", "case.source|capitalize"): "CaseSource",
    ("cases/templates/cases/case.html", '"Asks for " ~ case.pending_request'): "PendingRequest",
    ("cases/templates/cases/case.html", "case.pending_unit"): "LimitUnit (pending_unit)",
    ("cases/templates/cases/case.html", "e.action|replace('_', ' ')|capitalize"): (
        "Action (buttons, timeline)"
    ),
    ("cases/templates/cases/case.html", "e.actor_role"): "Role and system (timeline)",
    ("cases/templates/cases/inbox.html", "case.source|capitalize"): "CaseSource",
    ("cases/templates/cases/report.html", "major.kind|capitalize"): "CategoryKind",
    ("gridmgmt/templates/base.html", "label"): "Menu labels (base.html)",
    ("gridmgmt/templates/error.html", "code|replace('_', ' ')|capitalize"): (
        "Error codes (error.html)"
    ),
    ("maps/templates/maps/map.html", "m.kind|capitalize"): "CategoryKind",
    ("maps/templates/maps/map.html", "s|capitalize"): "CaseSource",
    ("maps/templates/maps/map.html", "a.level|capitalize"): "AreaLevel",
    ("gridmgmt/kernel/i18n.py", 'str(value).replace("_", " ").capitalize()'): (
        "CaseStatus (status_label)"
    ),
    ("maps/views.py", "value"): "Map words (maps.views.map_labels)",
}

CALL_START = re.compile(r"(?<![\w.])(?:_|gettext)\(")
FOR_LOOP = re.compile(r"\{%-?\s*for\s+(.+?)\s+in\s+(.+?)\s*-?%\}", re.S)
NAME_AND_FILTERS = re.compile(r"(\w+)\s*(?:\|.*)?", re.S)


def test_known_dynamic_families_exist() -> None:
    assert set(KNOWN_DYNAMIC.values()) <= set(DYNAMIC)


def _argument(text: str, start: int) -> str:
    """The text of a call's arguments from `start` (just after "(") to its closing ")"."""
    depth, quote, i = 1, "", start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    raise AssertionError(f"unbalanced call at {start}")


def dynamic_calls() -> Iterator[tuple[Path, int, str]]:
    """(file, offset, argument) of every translation call whose argument is not a literal."""
    for path in [*template_files(), *python_files()]:
        text = path.read_text(encoding="utf-8")
        for match in CALL_START.finditer(text):
            before = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
            if CALL.match(text, match.start()) or before.endswith("def "):
                continue  # a literal (checked by the scan), or `def gettext(...)`
            if path.suffix == ".py" and "#" in before:
                continue  # in a comment
            yield path, match.start(), " ".join(_argument(text, match.end()).split())


def _literal_loop_labels(text: str, offset: int, argument: str) -> list[str] | None:
    """The labels of `_(name|filters)` when the nearest `{% for %}` binding `name` before
    `offset` loops over a literal tuple or list; else None."""
    simple = NAME_AND_FILTERS.fullmatch(argument)
    if not simple:
        return None
    name = simple.group(1)
    loops = [
        loop
        for loop in FOR_LOOP.finditer(text, 0, offset)
        if name in [target.strip() for target in loop.group(1).split(",")]
    ]
    if not loops:
        return None
    targets = [target.strip() for target in loops[-1].group(1).split(",")]
    try:
        items = list(ast.literal_eval(loops[-1].group(2)))
    except (ValueError, SyntaxError):
        return None  # a variable, not a literal
    if len(targets) > 1:
        items = [item[targets.index(name)] for item in items]
    template = Environment(autoescape=False).from_string("{{ " + argument + " }}")
    return [template.render({name: item}) for item in items]


def test_dynamic_calls_are_all_covered() -> None:
    unknown, missing = [], []
    for path, offset, argument in dynamic_calls():
        text = path.read_text(encoding="utf-8")
        where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"
        labels = _literal_loop_labels(text, offset, argument) if path.suffix == ".html" else None
        if labels is not None:
            missing += [f"{where}: {label!r}" for label in labels if label not in ZH]
        elif (str(path.relative_to(ROOT)), argument) not in KNOWN_DYNAMIC:
            unknown.append(f"{where}: _({argument})")
    assert not missing, "Labels of literal loops without a zh translation:\n" + "\n".join(missing)
    assert not unknown, (
        "Labels built at run time: list their values in a family of DYNAMIC, translate them,"
        " and add (file, argument) to KNOWN_DYNAMIC:\n" + "\n".join(unknown)
    )


# ---------------------------------------------------------------- messages of refusals

# Where the messages a page can show are written: the exceptions the services raise and the
# refusals of the transition table (the JSON and Open311 APIs answer in English). In
# grids/services.py only `outside_territory`: the rest are the import commands' messages.
MESSAGE_SOURCES = {
    "cases/intake.py": None,
    "cases/queries.py": None,
    "cases/views.py": None,
    "cases/lifecycle.py": None,
    "cases/photos.py": None,
    "maps/aggregate.py": None,
    "maps/views.py": None,
    "gridmgmt/kernel/errors.py": None,
    "grids/services.py": "outside_territory",
}
RAISING = {
    "InvalidInput",
    "Conflict",
    "Forbidden",
    "NotFound",
    "OutsideTerritory",
    "PhotoError",
    "FilterError",
    "BadRequest",
    "refuse",
}


def _message_template(node: ast.expr) -> str | None:
    """A string literal as it is; an f-string with `{}` where its values go."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
        )
    return None


def message_templates() -> dict[str, str]:
    """Each message template of MESSAGE_SOURCES → where it is written."""
    found: dict[str, str] = {}
    for name, only in MESSAGE_SOURCES.items():
        tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
        scopes = [
            node
            for node in ast.walk(tree)
            if only is None or (isinstance(node, ast.FunctionDef) and node.name == only)
        ]
        for scope in [tree] if only is None else scopes:
            for node in ast.walk(scope):
                texts: list[ast.expr] = []
                if isinstance(node, ast.Call):
                    func = node.func
                    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                    if called in RAISING:
                        texts = list(node.args)
                    elif called == "_error" and len(node.args) > 2:  # photos: (name, code, why)
                        texts = [node.args[2]]
                elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
                    texts = node.value.elts[1:2]  # photos' (code, why) of unreadable data
                for text in texts:
                    template = _message_template(text)
                    if template and " " in template:
                        found.setdefault(template, f"{name}:{node.lineno}")
    return found


def test_message_scan_finds_raised_refused_and_photo_messages() -> None:
    found = message_templates()
    assert "unknown category {}" in found  # an f-string raised by the services
    assert "this case belongs to another unit" in found  # a refusal of the transition table
    assert "the file is empty" in found  # a photo's reason
    assert "it is not an image; only {} are accepted" in found  # ...and one returned
    assert "({}, {}) is outside the territory: no unit grid cell there" in found
    assert not any("first" in t for t in found), "no import command messages"


def test_every_message_a_page_can_show_has_a_chinese_translation() -> None:
    missing = {t: where for t, where in message_templates().items() if t not in ZH}
    listing = "\n".join(f"  {t!r}  ({where})" for t, where in missing.items())
    assert not missing, f"{len(missing)} messages without a zh translation:\n{listing}"


@pytest.mark.parametrize("template", sorted(message_templates()))
def test_a_filled_in_message_is_translated_with_its_values(template: str, app: Flask) -> None:
    values = [f"«{n}»" for n in range(template.count("{}"))]
    message = template.format(*values)
    fresh_request_globals()
    with app.test_request_context("/", headers={"Accept-Language": "zh"}):
        translated = i18n.translate_message(message)
    assert translated == ZH[template].format(*values)


def test_the_values_of_a_message_are_translated_in_turn(app: Flask) -> None:
    message = (
        "Photo 'x.pdf' was refused: it is a PDF document, not an image; only JPEG are accepted."
    )
    fresh_request_globals()
    with app.test_request_context("/", headers={"Accept-Language": "zh"}):
        assert i18n.translate_message(message) == (
            "照片 'x.pdf' 未被接受：这是 PDF 文档，不是图片；只接受 JPEG。"
        )
        assert i18n.translate_message("not a known message") == "not a known message"
    fresh_request_globals()
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert i18n.translate_message(message) == message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # A value that reads like another message stays as the client wrote it.
        ("unknown category 'x must be a number, not y'", "未知的类别 'x must be a number, not y'"),
        ("unknown table 'x'; tables are a, b", "未知的表 'x'；可用的表：a, b"),
        ("lon must be a number, not abc", "lon 须为数字，而不是 abc"),
        # Nested values stop one level down: no recursion on what a client sends.
        ("unknown category '" + "x must be a number, not " * 60 + "'", None),
        # A huge message (a huge value) stays English, and at once.
        ("unknown category '" + "a" * 5000 + "'", None),
    ],
)
def test_messages_with_values_clients_chose(app: Flask, message: str, expected: str | None) -> None:
    fresh_request_globals()
    with app.test_request_context("/", headers={"Accept-Language": "zh"}):
        translated = i18n.translate_message(message)
    if expected is None:
        assert translated.endswith(message[len("unknown category ") :]) or translated == message
    else:
        assert translated == expected
