"""The gettext catalogue is complete and in step with the code.

The real `pybabel extract -F babel.cfg` runs over the project into a temporary template; every
message it finds must have a Chinese translation in
`gridmgmt/translations/zh/LC_MESSAGES/messages.po` that is neither empty nor fuzzy, and the
catalogue must compile. Extraction sees only string literals, so a second test reads the code:
every domain error, `Message(...)` and `Decision.refuse(...)` must be given its message as a
literal. Words the pages build from stored values (`_(case.source|capitalize)`) are checked
per family, from the enums they come from.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import inspect
import io
import pkgutil
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
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
from maps.aggregate import FilterError
from maps.views import map_labels

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gridmgmt", "grids", "cases", "dispatch", "maps")
CATALOGUES = ROOT / "gridmgmt" / "translations"
PO = CATALOGUES / "zh" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
PYBABEL = Path(sys.executable).with_name("pybabel")


def read_catalogue(path: Path) -> Catalog:
    with path.open("rb") as file:
        return read_po(file)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """What `pybabel extract -F babel.cfg .` finds in the project (the venv's own pybabel)."""
    pot = tmp_path_factory.mktemp("catalogue") / "messages.pot"
    command = [str(PYBABEL), "-q", "extract", "-F", "babel.cfg", "-o", str(pot), "."]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return read_catalogue(pot)


@pytest.fixture(scope="module")
def zh() -> Catalog:
    """The Chinese catalogue as kept in git."""
    return read_catalogue(PO)


def messages(catalogue: Catalog) -> dict[str, Message]:
    """The catalogue's entries by message id, without the header."""
    return {str(m.id): m for m in catalogue if m.id}


def where(message: Message) -> str:
    return ", ".join(f"{path}:{line}" for path, line in message.locations) or "?"


def test_extraction_finds_every_kind_of_message(extracted: Catalog) -> None:
    found = messages(extracted)
    for msgid in (
        "Report a problem",  # a template's `_("...")`
        "Signed in as %(name)s",  # a template's `_("...", name=...)`
        "Wrong username or password.",  # `_("...")` in Python
        "Reported",  # `N_("...")` in i18n.RUNTIME_WORDS
        "Unit grid cells",  # `N_("...")` in maps.views.map_labels
        "this case belongs to another unit",  # Decision.refuse(Refusal.UNIT, "...")
        "unknown category %(code)r",  # InvalidInput("...", code=...)
        "no such case",  # NotFound("...")
        "Photo %(name)r was refused: %(why)s.",  # Message("...", {...})
        "the file is empty",  # a Message given as a value of another
        "the period starts after it ends",  # FilterError("...")
        "a form field has no name",  # N_ around a werkzeug BadRequest's description
    ):
        assert msgid in found, msgid
    assert "python-format" in found["unknown category %(code)r"].flags
    assert "Asks for " not in found  # `_("Asks for " ~ x)` is built at run time


def test_every_message_has_a_chinese_translation(extracted: Catalog, zh: Catalog) -> None:
    translated = messages(zh)
    untranslated = [m for m in messages(extracted).values() if not _is_done(translated, m)]
    listing = "\n".join(f"  {m.id!r}  ({where(m)})" for m in untranslated)
    assert not untranslated, (
        f"{len(untranslated)} messages without a Chinese translation in {PO.relative_to(ROOT)}"
        f" (run `make catalogue`, then translate them):\n{listing}"
    )


def _is_done(translated: dict[str, Message], message: Message) -> bool:
    entry = translated.get(str(message.id))
    return entry is not None and bool(entry.string) and not entry.fuzzy


def test_no_translation_is_empty_or_fuzzy(zh: Catalog) -> None:
    bad = [m.id for m in messages(zh).values() if not m.string or m.fuzzy]
    assert not bad, f"empty or fuzzy entries in {PO.relative_to(ROOT)}: {bad}"
    assert not zh.fuzzy, "the catalogue's header is marked fuzzy: it would not be compiled"


def test_the_catalogue_holds_no_message_the_code_no_longer_has(
    extracted: Catalog, zh: Catalog
) -> None:
    stale = sorted(set(messages(zh)) - set(messages(extracted)))
    assert not stale, f"run `make catalogue` (pybabel update) to retire {stale}"


def test_translations_keep_their_placeholders(zh: Catalog) -> None:
    problems = [f"{m.id!r}: {errors}" for m, errors in zh.check() if errors]
    assert not problems, "\n".join(problems)
    # `{lon}`-style fields are filled by JavaScript (report.js), not by Python.
    for message in messages(zh).values():
        fields = sorted(re.findall(r"{\w+}", str(message.id)))
        assert sorted(re.findall(r"{\w+}", str(message.string))) == fields, message.id


def test_the_catalogue_compiles(tmp_path: Path) -> None:
    copy = tmp_path / "zh" / "LC_MESSAGES" / "messages.po"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(PO.read_bytes())
    command = [str(PYBABEL), "compile", "-d", str(tmp_path), "--statistics"]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    compiled = Translations(io.BytesIO(copy.with_suffix(".mo").read_bytes()))
    assert compiled.gettext("Report a problem") == "上报问题"
    assert compiled.gettext("Case %(number)s reported.") % {"number": "X1"} == "案件 X1 已上报。"


def test_the_app_reads_an_up_to_date_compiled_catalogue(zh: Catalog) -> None:
    assert MO.is_file(), f"{MO.relative_to(ROOT)} is missing: run `make translations`"
    built = io.BytesIO()
    write_mo(built, zh)
    fresh = Translations(io.BytesIO(built.getvalue()))
    used = Translations(io.BytesIO(MO.read_bytes()))
    stale = [
        str(m.id)
        for m in messages(zh).values()
        if used.gettext(str(m.id)) != fresh.gettext(str(m.id))
    ]
    assert not stale, f"{MO.relative_to(ROOT)} is older than the .po: run `make translations`"


# ---------------------------------------------------------------- literal message ids

# Where a message id is handed on rather than written: the constructors themselves.
PLUMBING = {
    ("gridmgmt/kernel/errors.py", "__init__"),  # DomainError(text, **params) → Message(text, ...)
    ("gridmgmt/kernel/http_errors.py", "_http"),  # werkzeug's description (ours are marked with N_)
    ("cases/lifecycle.py", "refuse"),  # Decision.refuse(refusal, reason) → Message(reason, ...)
    ("gridmgmt/kernel/errors.py", "word"),  # a run-time word, listed with N_ where it is named
}


def python_files() -> Iterator[Path]:
    """Every Python module of the application packages."""
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


@cache
def error_classes() -> frozenset[str]:
    """The names of DomainError and all its subclasses (every module imported first), and of
    FilterError, the pure maps module's own error."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            importlib.import_module(info.name)
    names = {DomainError.__name__, FilterError.__name__}
    pending: list[type] = [DomainError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.split(".")[0] in PACKAGES:
                names.add(sub.__name__)
            pending.append(sub)
    return frozenset(names)


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


# Attributes that hold a message built elsewhere (and checked there): an error's `text`, a
# FilterError's `text`, a refused Decision's `reason`.
FORWARDED = {"text", "reason"}


def _is_literal_id(node: ast.expr) -> bool:
    """A literal, a Message(...) (checked on its own) or a message handed on (`err.text`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.Call) and _callee(node) == "Message":
        return True
    return isinstance(node, ast.Attribute) and node.attr in FORWARDED


def constructions(source: str, relative: str) -> Iterator[tuple[str, ast.Call, ast.expr | None]]:
    """(where, call, message argument) of every construction in `source` that takes a message
    id (an error class, Message(...), or refuse(refusal, "...")) outside PLUMBING."""
    takes_id = error_classes() | {"Message"}
    scopes: list[tuple[ast.AST, str]] = [(ast.parse(source), "")]
    while scopes:
        node, function = scopes.pop()
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            scopes.append((child, inner))
            if not isinstance(child, ast.Call) or (relative, function) in PLUMBING:
                continue
            name, index = _callee(child), 0
            if name == "refuse":
                index = 1
            elif name not in takes_id:
                continue
            argument = child.args[index] if len(child.args) > index else None
            yield f"{relative}:{child.lineno}", child, argument


def message_ids() -> Iterator[tuple[str, ast.Call, ast.expr | None]]:
    """The constructions of every module of the application."""
    for path in python_files():
        yield from constructions(
            path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
        )


def not_literal(found: Iterator[tuple[str, ast.Call, ast.expr | None]]) -> list[str]:
    return [
        f"{place}: {ast.unparse(call)[:120]}"
        for place, call, argument in found
        if argument is None or not _is_literal_id(argument)
    ]


def test_scan_sees_the_constructions() -> None:
    seen = {ast.unparse(call)[:40] for _, call, _ in message_ids()}
    assert any(text.startswith("Decision.refuse(Refusal.") for text in seen), seen
    assert any(text.startswith("InvalidInput(") for text in seen)
    assert any(text.startswith("Message(") for text in seen)
    assert {"PhotoError", "PhotoTooLarge", "OutsideTerritory", "FilterError"} <= error_classes()


def test_the_scan_flags_what_extraction_would_miss() -> None:
    source = """
def f(code, reason, err):
    raise InvalidInput("unknown category %(code)r", code=code)
    raise NotFound(err.text, **err.params)
    PhotoError(Message("it is empty"))
    raise Conflict(f"case {code} changed")
    raise InvalidInput("a" if code else "b")
    Message(reason)
    Decision.refuse(Refusal.INPUT, f"{code} needs a reason")
    raise Forbidden()
"""
    flagged = {line.split(": ", 1)[1][:20] for line in not_literal(constructions(source, "x.py"))}
    assert flagged == {
        "Conflict(f'case {cod",
        "InvalidInput('a' if ",
        "Message(reason)",
        "Decision.refuse(Refu",
        "Forbidden()",
    }


def test_every_message_id_is_a_literal() -> None:
    """A message given as an f-string, a variable or an expression would escape
    `pybabel extract`: its pages would stay English, and no test would say so."""
    bad = not_literal(message_ids())
    assert not bad, "message ids that are not string literals:\n" + "\n".join(bad)


def test_babel_cfg_extracts_every_error_class() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "babel.cfg")
    python = [s for s in config.sections() if s.startswith("python:")]
    assert {s.split(":", 1)[1].strip() for s in python} == {f"{p}/**.py" for p in PACKAGES}
    for section in python:
        keywords = set(config[section]["keywords"].split())
        assert error_classes() | {"Message", "refuse:2", "lazy_gettext"} <= keywords, section
    templates = {s.split(":", 1)[1].strip() for s in config.sections() if s.startswith("jinja2:")}
    for path in ROOT.glob("*/**/templates/**/*.html"):
        package = path.relative_to(ROOT).parts[0]
        assert f"{package}/**/templates/**.html" in templates, path


# ---------------------------------------------------------------- words built at run time


def _render(expression: str) -> Callable[[str], str]:
    """A function rendering a template `expression` of `v`, with Jinja's own filters."""
    template = Environment(autoescape=False).from_string("{{ " + expression + " }}")
    return lambda value: template.render(v=value)


def _values(enum: type) -> list[str]:
    return [member.value for member in enum]


def _http_error_codes() -> set[str]:
    """The codes `errors._http` makes of werkzeug's HTTP errors, and its "error" fallback."""
    names = [exc().name for exc in default_exceptions.values()]
    return {"error"} | {(name or "error").lower().replace(" ", "_") for name in names}


def _domain_error_codes() -> set[str]:
    error_classes()  # imports every module
    codes = {DomainError.code}
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        for sub in pending.pop().__subclasses__():
            codes.add(sub.code)
            pending.append(sub)
    return codes


def _hotspot_kinds() -> list[str]:
    """The place kinds `recent_hotspots` writes in SQL: `CASE ... 'community' ... END AS kind`."""
    case = re.search(r"CASE\b(.*?)\bEND AS kind", inspect.getsource(recent_hotspots), re.S)
    assert case, "recent_hotspots no longer computes `kind` with CASE ... END AS kind"
    return re.findall(r"'(\w+)'", case.group(1))


WORDS = _render("v|replace('_', ' ')|capitalize")
CAPITALIZED = _render("v|capitalize")
AS_IS = _render("v")

# Family → the English labels pages render, built with the templates' own expressions.
DYNAMIC: dict[str, Callable[[], list[str]]] = {
    "CaseStatus (status_label)": lambda: [i18n.status_label(s) for s in CaseStatus],
    "Status groups (map.html)": lambda: [CAPITALIZED(v) for v in ("open", "closed", "overdue")],
    "Action (buttons, timeline)": lambda: [WORDS(v) for v in _values(Action)],
    "RejectReason": lambda: [WORDS(v) for v in _values(RejectReason)],
    "CaseSource": lambda: [CAPITALIZED(v) for v in _values(CaseSource)],
    "CategoryKind": lambda: [CAPITALIZED(v) for v in _values(CategoryKind)],
    "Role and system (timeline)": lambda: [AS_IS(v) for v in [*_values(Role), SYSTEM]],
    "Words of refusals (cases.lifecycle.WORDS)": lambda: [
        *(v.replace("_", " ") for v in _values(Action)),
        *_values(CaseStatus),
        "a new case",
        *_values(PendingRequest),
    ],
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
def test_words_built_at_run_time_are_extracted_and_translated(
    family: str, extracted: Catalog, zh: Catalog
) -> None:
    labels = DYNAMIC[family]()
    assert labels, family
    found, translated = messages(extracted), messages(zh)
    not_extracted = sorted({label for label in labels if label not in found})
    assert not not_extracted, f"{family}: mark {not_extracted} with N_ (i18n.RUNTIME_WORDS)"
    missing = sorted({label for label in labels if not _is_done(translated, found[label])})
    assert not missing, f"{family}: no zh translation of {missing}"


def test_rendered_labels_look_as_on_the_pages() -> None:
    assert i18n.status_label("in_progress") == "In progress"
    assert WORDS(Action.REPORT_DONE.value) == "Report done"
    assert WORDS(RejectReason.NOT_CITY_PROBLEM.value) == "Not city problem"
    assert CAPITALIZED(CaseSource.OPEN311.value) == "Open311"
    assert WORDS("request_entity_too_large") == "Request entity too large"
