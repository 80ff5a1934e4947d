"""Chinese and English pages with Flask-Babel and gettext catalogues.

English is the source language: templates and code write `_("Report a problem")`, with
`%(name)s` fields for values (`_("Case %(number)s reported.", number=n)`), and the catalogue
`gridmgmt/translations/zh/LC_MESSAGES/messages.po` gives the Chinese. `make` compiles it into
the `.mo` Flask-Babel reads; `pybabel extract -F babel.cfg` finds the messages (README,
"Translations"). A message the catalogue lacks shows in English, never as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from babel import Locale
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from babel.support import NullTranslations
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    has_request_context,
    redirect,
    request,
)
from flask_babel import (
    Babel,
    format_date,
    format_datetime,
    format_decimal,
    format_percent,
    format_timedelta,
    get_locale,
    get_timezone,
    get_translations,
    gettext,
    lazy_gettext,
    ngettext,
    refresh,
)
from markupsafe import Markup

from gridmgmt.kernel.errors import N_

__all__ = [
    "N_",
    "RUNTIME_WORDS",
    "Words",
    "current_lang",
    "decimal",
    "display_timezone",
    "format_date",
    "format_datetime",
    "format_decimal",
    "format_percent",
    "format_timedelta",
    "gettext",
    "has_endpoint",
    "init_app",
    "is_local_path",
    "lazy_gettext",
    "localized",
    "localtime",
    "ngettext",
    "number",
    "other_lang",
    "percent",
    "status_label",
    "words",
]

SUPPORTED: tuple[str, ...] = ("zh", "en")
DEFAULT_LANG = "en"
COOKIE_NAME = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
DEFAULT_DISPLAY_TZ = "America/Los_Angeles"
LANGUAGE_NAMES: dict[str, str] = {"zh": "中文", "en": "English"}
# The catalogues: <lang>/LC_MESSAGES/messages.po (kept in git) and .mo (built by make).
CATALOGUE_DIR = Path(__file__).resolve().parent.parent / "translations"
DATETIME_PATTERN = "yyyy-MM-dd HH:mm"  # Babel (CLDR) pattern: the same in both languages
DECIMAL_PATTERN = "#,##0.0"
PERCENT_PATTERN = "#,##0.0%"

_ = gettext
babel = Babel()


# Words the pages build at run time from stored values, e.g. `_(case.source|capitalize)`:
# `pybabel extract` cannot see them there, so they are marked here to keep them in the
# catalogue. tests/gridmgmt/test_translations.py derives each family from its enum and fails
# when one is missing.
RUNTIME_WORDS: tuple[str, ...] = (
    # Case statuses (`status_label`: "in_progress" → "In progress")
    N_("Reported"),
    N_("Verified"),
    N_("Invalid"),
    N_("Filed"),
    N_("Rejected"),
    N_("Merged"),
    N_("Dispatched"),
    N_("In progress"),
    N_("Returned"),
    N_("Suspended"),
    N_("Handled"),
    N_("Checking"),
    N_("Checked"),
    N_("Closed"),
    # Status groups of the map's filter (`_(s|capitalize)`)
    N_("Open"),
    N_("Overdue"),
    # Actions: buttons and timeline (`_(action|replace('_', ' ')|capitalize)`)
    N_("Report"),
    N_("Verify"),
    N_("Invalidate"),
    N_("File"),
    N_("Reject"),
    N_("Merge"),
    N_("Dispatch"),
    N_("Accept"),
    N_("Return"),
    N_("Request extension"),
    N_("Approve extension"),
    N_("Refuse extension"),
    N_("Request suspension"),
    N_("Approve suspension"),
    N_("Refuse suspension"),
    N_("Resume"),
    N_("Report done"),
    N_("Assign check"),
    N_("Check pass"),
    N_("Check fail"),
    N_("Close"),
    N_("Reopen"),
    N_("Warn deadline"),
    N_("Mark overdue"),
    N_("Rehandle"),
    N_("Dismiss complaint"),
    # Reasons to reject a report (`_(reason|replace('_', ' ')|capitalize)`)
    N_("Not city problem"),
    N_("Duplicate"),
    N_("Outside territory"),
    # An error code not named elsewhere (`error.html`: the code's words)
    N_("Not configured"),
    N_("Expired"),
    N_("Already answered"),
    # Case sources (`_(case.source|capitalize)`)
    N_("Inspector"),
    N_("Citizen"),
    N_("Open311"),
    N_("Hotline"),
    N_("Operator"),
    # Category kinds (`_(major.kind|capitalize)`)
    N_("Component"),
    N_("Event"),
    # Roles of the people in a timeline (`_(e.actor_role)`, not capitalised)
    N_("citizen"),
    N_("inspector"),
    N_("operator"),
    N_("dispatcher"),
    N_("unit_staff"),
    N_("leader"),
    N_("admin"),
    N_("system"),
    # Pending requests (`_("Asks for " ~ case.pending_request)`) and their units of time
    N_("Asks for extension"),
    N_("Asks for suspension"),
    N_("hours"),
    N_("days"),
    # Area levels and hotspot places (`_(a.level|capitalize)`, `_(h.kind|capitalize)`)
    N_("District"),
    N_("Street"),
    N_("Community"),
    N_("Cell"),
    # Error pages (`_(code|replace('_', ' ')|capitalize)`): domain errors…
    N_("Error"),
    N_("Domain error"),
    N_("Invalid input"),
    N_("Invalid photo"),
    N_("Not found"),
    N_("Conflict"),
    N_("Forbidden"),
    # …and werkzeug's HTTP errors, named from `err.name`
    N_("Bad request"),
    N_("Unauthorized"),
    N_("Method not allowed"),
    N_("Not acceptable"),
    N_("Request timeout"),
    N_("Gone"),
    N_("Length required"),
    N_("Precondition failed"),
    N_("Request entity too large"),
    N_("Request uri too long"),
    N_("Unsupported media type"),
    N_("Requested range not satisfiable"),
    N_("Expectation failed"),
    N_("I'm a teapot"),
    N_("Misdirected request"),
    N_("Unprocessable entity"),
    N_("Locked"),
    N_("Failed dependency"),
    N_("Precondition required"),
    N_("Too many requests"),
    N_("Request header fields too large"),
    N_("Unavailable for legal reasons"),
    N_("Internal server error"),
    N_("Not implemented"),
    N_("Bad gateway"),
    N_("Service unavailable"),
    N_("Gateway timeout"),
    N_("Http version not supported"),
)

bp = Blueprint("i18n", __name__)


def _negotiate() -> str:
    """The language asked for by the `lang` cookie, else by Accept-Language, else English."""
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie in SUPPORTED:
        return cookie
    # By primary subtag in the browser's order of preference: werkzeug's best_match prefers
    # any exact tag, so "zh-CN,en;q=0.9" would give English. "*" states no preference.
    for tag, quality in request.accept_languages:  # sorted by quality, highest first
        primary = tag.split("-", 1)[0].lower()
        if quality > 0 and primary in SUPPORTED:
            return primary
    return DEFAULT_LANG


def current_lang() -> str:
    """The language of the current request ("zh" or "en"); English outside a request."""
    if not has_request_context():
        return DEFAULT_LANG
    lang = g.get("lang")
    if lang is None:
        # Before (or without) the before_request hook, e.g. in an early error handler.
        lang = g.lang = _negotiate()
    return lang


def display_timezone() -> str:
    """The zone dates are shown in: the app's DISPLAY_TZ (Flask-Babel's timezone selector)."""
    return current_app.config.get("DISPLAY_TZ") or DEFAULT_DISPLAY_TZ


def other_lang(lang: str | None = None) -> str:
    """The supported language that is not `lang` (default: the current one)."""
    lang = lang or current_lang()
    return next(code for code in SUPPORTED if code != lang)


def localized(obj: Any, field: str) -> str:
    """`obj.<field>_<lang>` in the current language, else in the other one, else ""."""
    lang = current_lang()
    for code in (lang, other_lang(lang)):
        value = getattr(obj, f"{field}_{code}", None)
        if value:
            return str(value)
    return ""


def status_label(status: Any) -> str:
    """The translated label of a case status value ("in_progress" → "In progress" / "处置中")."""
    value = getattr(status, "value", status)
    return gettext(str(value).replace("_", " ").capitalize())


def localtime(value: datetime | None, pattern: str = DATETIME_PATTERN) -> str:
    """An aware datetime in the app's DISPLAY_TZ, "YYYY-MM-DD HH:MM" by default ("" for None).

    Formatted by Babel for the reader's locale (`pattern` is a CLDR pattern, or "short",
    "medium"...); a naive datetime is taken as UTC, the database's clock.
    """
    if value is None:
        return ""
    return format_datetime(value, pattern)


def number(value: float | None, pattern: str | None = None) -> str:
    """A count or measure in the reader's locale ("1,234"; "" for None)."""
    return "" if value is None else format_decimal(value, pattern)


@dataclass(frozen=True)
class Figures:
    """`number`, `decimal` and `percent` bound to one locale, for pages that show thousands
    of figures (the evaluation's tables): the locale is looked up once, and where the locale
    groups by threes (`group`) and writes a decimal and a percent as English does with its own
    symbols (`point`, `percent_sign`), figures are written without Babel's pattern machinery,
    rounded as Babel rounds (the shortest decimal of the float, half to even)."""

    locale: Locale
    group: str | None  # the grouping symbol when the locale groups every three digits
    point: str | None = None  # the decimal symbol, when one-decimal figures may be written here
    percent_sign: str = "%"

    def number(self, value: float | None) -> str:
        """As `number`."""
        if value is None:
            return ""
        if self.group is not None and isinstance(value, int):
            return f"{value:,}".replace(",", self.group)
        return babel_numbers.format_decimal(value, locale=self.locale)

    def _one_decimal(self, value: Decimal) -> str:
        whole, _dot, tenth = f"{value.quantize(TENTH, ROUND_HALF_EVEN):,f}".partition(".")
        return f"{whole.replace(',', self.group or '')}{self.point}{tenth}"

    def decimal(self, value: float | None) -> str:
        """As `decimal`."""
        if value is None:
            return ""
        if self.point is None or value < 0:
            return babel_numbers.format_decimal(value, DECIMAL_PATTERN, locale=self.locale)
        return self._one_decimal(Decimal(str(value)))

    def percent(self, value: float | None) -> str:
        """As `percent`."""
        if value is None:
            return ""
        if self.point is None or value < 0:
            return babel_numbers.format_percent(value, PERCENT_PATTERN, locale=self.locale)
        return self._one_decimal(Decimal(str(value)).scaleb(2)) + self.percent_sign


TENTH = Decimal("0.1")
# Figures that a fast `Figures` must write as Babel does, or Babel writes them for the locale.
_PROBES = (0.0, 0.05, 0.15, 0.25, 0.12345, 0.5, 0.99949, 0.9995, 1.0, 12.25, 1234.56, 98765.45)


@lru_cache(maxsize=16)
def _figures_of(locale: Locale) -> Figures:
    pattern = locale.decimal_formats.get(None)
    by_threes = pattern is not None and pattern.grouping == (3, 3)
    slow = Figures(locale, babel_numbers.get_group_symbol(locale) if by_threes else None)
    if slow.group is None:
        return slow
    sign = babel_numbers.format_percent(1, "0%", locale=locale).removeprefix("100")
    fast = replace(slow, point=babel_numbers.get_decimal_symbol(locale), percent_sign=sign or "%")
    agrees = all(
        fast.decimal(v) == slow.decimal(v) and fast.percent(v) == slow.percent(v) for v in _PROBES
    )
    return fast if agrees else slow


def figures() -> Figures:
    """The reader's locale's `Figures`."""
    return _figures_of(get_locale() or Locale.parse("en"))


@dataclass(frozen=True)
class Words:
    """The reader's catalogue, language and time zone looked up once, for pages that show
    hundreds of labels and dates (the staff's case lists): `_`, `status_label`, `localized`
    and `localtime` as they are, without Flask-Babel's search of the request for the locale,
    the catalogue and the zone on every call (a label 31 µs → 0.4 µs, a date 82 → 14 µs)."""

    translations: NullTranslations
    lang: str
    locale: Locale
    zone: tzinfo

    def __call__(self, message: str, **variables: Any) -> Markup:
        """As `_` in a template: the translation is markup, the `variables` are escaped into
        it (use it for labels made at run time; a template's own words stay `_("...")`, where
        `pybabel extract` finds them)."""
        return Markup(self.translations.ugettext(message)) % variables

    def status(self, status: Any) -> str:
        """As `status_label`."""
        value = getattr(status, "value", status)
        return self.translations.ugettext(str(value).replace("_", " ").capitalize())

    def localized(self, obj: Any, field: str) -> str:
        """As `localized`."""
        for code in (self.lang, other_lang(self.lang)):
            value = getattr(obj, f"{field}_{code}", None)
            if value:
                return str(value)
        return ""

    def localtime(self, value: datetime | None, pattern: str = DATETIME_PATTERN) -> str:
        """As `localtime`. The default pattern is all digits in every locale (Babel writes a
        date's numbers in ASCII): it is written without Babel's pattern machinery."""
        if value is None:
            return ""
        if pattern != DATETIME_PATTERN:
            return babel_dates.format_datetime(value, pattern, tzinfo=self.zone, locale=self.locale)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        at = value.astimezone(self.zone)  # as Babel does (a pytz zone's result is normalised)
        return f"{at.year:04d}-{at.month:02d}-{at.day:02d} {at.hour:02d}:{at.minute:02d}"


def words() -> Words:
    """The reader's `Words`, for the current request."""
    return Words(
        get_translations(), current_lang(), get_locale() or Locale.parse("en"), get_timezone()
    )


def decimal(value: float | None) -> str:
    """A measure with one decimal in the reader's locale ("12.5"; "" for None)."""
    return number(value, DECIMAL_PATTERN)


def percent(value: float | None) -> str:
    """A rate (0..1) as a percentage with one decimal in the reader's locale ("" for None)."""
    return "" if value is None else format_percent(value, PERCENT_PATTERN)


def is_local_path(target: str) -> bool:
    """True when `target` is a path on this site, safe to redirect to (no other host)."""
    if not target.startswith("/") or target.startswith("//"):
        return False
    # Browsers read "/\evil.com" and "/\t/evil.com" as "//evil.com".
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def has_endpoint(name: str) -> bool:
    """True when the app has a view called `name` (templates link only to what exists)."""
    return name in current_app.view_functions


@bp.get("/lang/<code>")
def switch_language(code: str) -> Response:
    """Remember the chosen language in a cookie for a year and go back to `next`."""
    if code not in SUPPORTED:
        abort(404)
    target = request.args.get("next", "")
    response = redirect(target if is_local_path(target) else "/")
    response.set_cookie(
        COOKIE_NAME,
        code,
        max_age=COOKIE_MAX_AGE,
        samesite="Lax",
        secure=request.is_secure,
        httponly=True,
    )
    return response


def _set_lang() -> None:
    g.lang = _negotiate()
    refresh()  # Flask-Babel caches the locale in `g`, which an app context may reuse


def _vary_on_language(response: Response) -> Response:
    # A page's language depends on these headers: shared caches must not mix them up.
    if response.mimetype == "text/html":
        response.vary.update(("Cookie", "Accept-Language"))
    return response


def _template_context() -> dict[str, Any]:
    lang = current_lang()
    return {"lang": lang, "other_lang": other_lang(lang), "language_names": LANGUAGE_NAMES}


def _warn_if_not_compiled(app: Flask) -> None:
    """Pages fall back to English without the compiled catalogue: say so at start-up."""
    for po in CATALOGUE_DIR.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if not mo.is_file() or mo.stat().st_mtime < po.stat().st_mtime:
            app.logger.warning("%s is missing or older than its .po: run `make translations`", mo)


def init_app(app: Flask) -> None:
    """Flask-Babel with the language negotiated per request and DISPLAY_TZ as the timezone;
    /lang/<code>; `_`, `gettext`, `ngettext` (Flask-Babel's), `localized`, `status_label`,
    `words`, `localtime`, `number`, `decimal`, `percent` in templates."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANG)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(CATALOGUE_DIR))
    babel.init_app(app, locale_selector=current_lang, timezone_selector=display_timezone)
    if app.config["BABEL_TRANSLATION_DIRECTORIES"] == str(CATALOGUE_DIR):
        _warn_if_not_compiled(app)
    app.before_request(_set_lang)
    app.after_request(_vary_on_language)
    app.register_blueprint(bp)
    app.context_processor(_template_context)
    # Globals, so that macros imported without context can use them (Flask-Babel installs
    # `_`, `gettext` and `ngettext` itself, in Jinja's newstyle: `_("x %(n)s", n=1)`).
    app.add_template_global(localized, "localized")
    app.add_template_global(status_label, "status_label")
    app.add_template_global(has_endpoint, "has_endpoint")
    app.add_template_global(words, "words")
    app.add_template_filter(localtime, "localtime")
    app.add_template_filter(number, "number")
    app.add_template_filter(decimal, "decimal")
    app.add_template_filter(percent, "percent")
    app.add_template_filter(format_date, "date")
