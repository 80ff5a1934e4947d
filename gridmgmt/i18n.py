"""Chinese and English pages without a dependency: a lookup table keyed by the English text.

English is the source language: templates and code write `_("Report a problem")`, and the
"zh" table gives the Chinese. A missing entry shows the English text, never an error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

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

SUPPORTED: tuple[str, ...] = ("zh", "en")
DEFAULT_LANG = "en"
COOKIE_NAME = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
DEFAULT_DISPLAY_TZ = "America/Los_Angeles"
LANGUAGE_NAMES: dict[str, str] = {"zh": "中文", "en": "English"}

TRANSLATIONS: dict[str, dict[str, str]] = {
    "zh": {
        # Navigation and roles' pages
        "Report a problem": "上报问题",
        "My cases": "我的案件",
        "Verification tasks": "核查任务",
        "Inbox": "受理台",
        "Dispatch board": "派遣台",
        "Work queue": "处置队列",
        "Track a case": "案件查询",
        # Signing in
        "Sign in": "登录",
        "Sign out": "退出",
        "Username": "用户名",
        "Password": "密码",
        # Reporting
        "Category": "类别",
        "Description": "问题描述",
        "Photos": "照片",
        "Location": "位置",
        "Use my location": "使用我的位置",
        "Submit": "提交",
        "Sending…": "正在发送…",
        "You are offline: the report is kept and will be sent again.": (
            "当前离线：上报内容已保存，将自动重新发送。"
        ),
        # Cases
        "Case number": "案件编号",
        "Deadline": "处置时限",
        "Overdue": "已超期",
        "Status": "状态",
        # Case statuses (status_label turns "in_progress" into "In progress")
        "Reported": "已上报",
        "Verified": "已核实",
        "Invalid": "无效",
        "Filed": "已立案",
        "Rejected": "不予立案",
        "Merged": "已合并",
        "Dispatched": "已派遣",
        "In progress": "处置中",
        "Returned": "已回退",
        "Suspended": "缓办",
        "Handled": "已处置",
        "Closed": "已结案",
        # The layout
        "Menu": "菜单",
        "Signed in as {name}": "当前用户：{name}",
        "Switch language": "切换语言",
        "Skip to content": "跳到正文",
        "Grid-based urban management": "数字化城市管理",
    },
}

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


def other_lang(lang: str | None = None) -> str:
    """The supported language that is not `lang` (default: the current one)."""
    lang = lang or current_lang()
    return next(code for code in SUPPORTED if code != lang)


def gettext(message: str, **values: Any) -> str:
    """Translate `message` into the current language, then fill `{name}` fields from `values`."""
    text = TRANSLATIONS.get(current_lang(), {}).get(message, message)
    return text.format(**values) if values else text


_ = gettext


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


def localtime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Render an aware datetime in the app's DISPLAY_TZ as "YYYY-MM-DD HH:MM" ("" for None).

    A naive datetime is taken as UTC, the database's clock.
    """
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    zone = ZoneInfo(current_app.config.get("DISPLAY_TZ") or DEFAULT_DISPLAY_TZ)
    return value.astimezone(zone).strftime(fmt)


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


def _vary_on_language(response: Response) -> Response:
    # A page's language depends on these headers: shared caches must not mix them up.
    if response.mimetype == "text/html":
        response.vary.update(("Cookie", "Accept-Language"))
    return response


def _template_context() -> dict[str, Any]:
    lang = current_lang()
    return {
        "_": gettext,
        "lang": lang,
        "other_lang": other_lang(lang),
        "localized": localized,
        "language_names": LANGUAGE_NAMES,
    }


def init_app(app: Flask) -> None:
    """Negotiate the language per request; add /lang/<code>, `_`, `localized`, `localtime`."""
    app.before_request(_set_lang)
    app.after_request(_vary_on_language)
    app.register_blueprint(bp)
    app.context_processor(_template_context)
    # Globals too, so that macros imported without context can translate.
    app.add_template_global(gettext, "_")
    app.add_template_global(localized, "localized")
    app.add_template_global(status_label, "status_label")
    app.add_template_global(has_endpoint, "has_endpoint")
    app.add_template_filter(localtime, "localtime")
