"""Chinese and English pages without a dependency: a lookup table keyed by the English text.

English is the source language: templates and code write `_("Report a problem")`, and the
"zh" table gives the Chinese. A missing entry shows the English text, never an error.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
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
        "Checking": "核查中",
        "Checked": "已核查",
        "Closed": "已结案",
        # The layout
        "Menu": "菜单",
        "Signed in as {name}": "当前用户：{name}",
        "Switch language": "切换语言",
        "Skip to content": "跳到正文",
        "Grid-based urban management": "数字化城市管理",
        "Home": "首页",
        # Signing in (messages)
        "Wrong username or password.": "用户名或密码错误。",
        # Reporting (the form)
        "Tap the map where the problem is.": "请在地图上点选问题所在位置。",
        "Longitude": "经度",
        "Latitude": "纬度",
        "Position: {lon}, {lat}": "位置：经度 {lon}，纬度 {lat}",
        "Address or landmark": "地址或标志物",
        "Major class": "大类",
        "Minor class": "小类",
        "All": "全部",
        "Choose…": "请选择…",
        "Urgent": "紧急",
        "Contact (optional, never shown publicly)": "联系方式（选填，不会公开）",
        "Name": "名称",  # shared with the evaluation tables' place and unit names
        "Phone": "电话",
        "Email": "电子邮箱",
        "Case {number} reported.": "案件 {number} 已上报。",
        # Category kinds (`_(major.kind|capitalize)`)
        "Component": "部件",
        "Event": "事件",
        # Case sources (`_(case.source|capitalize)`)
        "Inspector": "监督员",
        "Citizen": "市民",
        "Open311": "Open311 接口",
        "Hotline": "热线",
        "Operator": "受理员",
        # Roles of the people in a timeline (`_(e.actor_role)`, not capitalised)
        "citizen": "市民",
        "inspector": "监督员",
        "operator": "受理员",
        "dispatcher": "派遣员",
        "unit_staff": "处置单位人员",
        "leader": "领导",
        "admin": "管理员",
        "system": "系统",
        # One case
        "Case": "案件",
        "Unit": "处置单位",
        "Waiting": "待审批",
        "Asks for extension": "申请延期",
        "Asks for suspension": "申请缓办",
        "hours": "工作时",
        "days": "工作日",
        "Rework": "返工",
        "What you can do": "可执行的操作",
        "Possible duplicates:": "可能重复：",
        "Before": "处置前",
        "After": "处置后",
        "Timeline": "流转记录",
        "Merged into case {number}, now: {status}.": "已合并到案件 {number}，当前状态：{status}。",
        "Case {number}: {status}.": "案件 {number}：{status}。",
        # Tracking a case
        "Find": "查询",
        "No case numbered {number}.": "没有编号为 {number} 的案件。",
        "Your report was merged into case {number}; its status is shown.": (
            "您上报的问题已并入案件 {number}，以下显示该案件的状态。"
        ),
        # Lists, the inbox and the dispatch board
        "Nothing here.": "暂无内容。",
        "New reports": "新上报",
        "Reports to verify": "待核实的上报",
        "Results to check on site": "待现场核查的处置结果",
        "Handled: send an inspector to check": "已处置，待派监督员核查",
        "Being checked on site": "正在现场核查",
        "Checked: ready to close": "已核查，待结案",
        "Filed, waiting for dispatch": "已立案，待派遣",
        "Cannot be routed:": "无法自动派遣：",
        "Routes to unit {unit}": "将派遣至处置单位 {unit}",
        "Returned by units": "处置单位回退的案件",
        "Extension and suspension requests": "延期和缓办申请",
        "Hotspots (last 24 hours)": "热点区域（最近 24 小时）",
        "Community": "社区",  # hotspot places (`_(h.kind|capitalize)`), an area level
        "Cell": "单元网格",
        "{count} new cases, usually {baseline}": "新增 {count} 件，通常为 {baseline} 件",
        # Map, dashboard and evaluation (综合评价)
        "Map": "地图",
        "Dashboard": "数据看板",
        "Evaluation": "综合评价",
        "Filters": "筛选条件",
        "From": "开始日期",
        "To": "结束日期",
        "Show": "显示",
        "Kind": "类型",
        "Source": "来源",
        "Area": "区域",
        "District": "区",  # area levels (`_(a.level|capitalize)`)
        "Street": "街道",
        "Colour by": "着色依据",
        "Open": "未结案",
        "On time": "按期数",
        "On-time rate": "按期率",
        "Unit grid cells": "单元网格",
        "Case density": "案件密度",
        "Overdue cases": "超期案件",
        "Base map": "底图",
        "No data": "无数据",
        "Counts are aggregated per unit grid cell and community in the database; single cases"
        " are drawn only when a filter leaves 5,000 or fewer.": (
            "数量按单元网格和社区在数据库中汇总；筛选结果不超过 5,000 件时才逐一绘制案件。"
        ),
        "New cases per day, by major class": "每日新增案件（按大类）",
        "On-time closure rate per week": "每周按期结案率",
        "Cases due": "应结案数",
        "Closed on time": "按期结案数",
        "Closure rate": "结案率",
        "Rework rate": "返工率",
        "Returns": "回退数",
        "Avg. hours": "平均用时（小时）",
        "Score": "得分",
        "Closure rate = closed / (due − suspended); on-time rate = closed on time / (due −"
        " suspended); score = on-time rate in points, one point off per rework.": (
            "结案率 = 结案数 /（应结案数 − 缓办数）；按期率 = 按期结案数 /（应结案数 − 缓办数）；"
            "得分 = 按期率折算的百分制分数，每返工一次扣 1 分。"
        ),
        "Units": "处置单位",
        "Units, urgent cases": "处置单位（紧急案件）",
        "Communities": "社区",
        "Streets": "街道",
        "Districts": "区",
        "Inspectors": "监督员",
        "Reports": "上报数",
        "Valid": "有效数",
        "Valid rate": "有效率",
        "Checks": "核查数",
        "Open data": "开放数据",
        # Failed background jobs
        "Failed jobs": "失败的任务",
        "Jobs that failed after their retries. A case never waits on them alone: the sweep"
        " dispatches filed cases again.": (
            "这些后台任务在重试后仍然失败。案件不会只等待它们：定时巡检会重新派遣已立案的案件。"
        ),
        "Time": "时间",
        "Job": "任务",
        "Cases": "案件",
        "Retry": "重试",
        "Job {job} is queued again.": "任务 {job} 已重新排队。",
        # Action forms
        "Reason": "原因",
        "Merge into case": "合并到案件",
        "By the routing rules": "按派遣规则",
        "Any inspector": "任一监督员",
        "More time": "申请时长",
        "Unit of time": "时间单位",
        "working hours": "工作时",
        "working days": "工作日",
        "Note": "说明",
        # Actions: buttons and timeline (`_(action|replace('_', ' ')|capitalize)`)
        "Report": "上报",
        "Verify": "核实属实",
        "Invalidate": "核实不属实",
        "File": "立案",
        "Reject": "不予立案",
        "Merge": "合并",
        "Dispatch": "派遣",
        "Accept": "签收",
        "Return": "回退",
        "Request extension": "申请延期",
        "Approve extension": "批准延期",
        "Refuse extension": "驳回延期",
        "Request suspension": "申请缓办",
        "Approve suspension": "批准缓办",
        "Refuse suspension": "驳回缓办",
        "Resume": "恢复办理",
        "Report done": "处置完毕",
        "Assign check": "指派核查",
        "Check pass": "核查通过",
        "Check fail": "核查不通过",
        "Close": "结案",
        "Reopen": "重新开启",
        "Warn deadline": "临期预警",  # the system's timeline entries
        "Mark overdue": "标记超期",
        # Reasons to reject a report (`_(reason|replace('_', ' ')|capitalize)`)
        "Not city problem": "非城管问题",
        "Duplicate": "重复上报",
        "Outside territory": "超出辖区",  # also the title of the outside_territory error page
        # Error pages (`_(code|replace('_', ' ')|capitalize)`): domain errors…
        "Error": "错误",
        "Domain error": "业务错误",
        "Invalid input": "输入无效",
        "Invalid photo": "照片无效",
        "Not found": "未找到",
        "Conflict": "操作冲突",
        "Forbidden": "无权访问",
        # …and werkzeug's HTTP errors, named from `err.name`
        "Bad request": "请求无效",
        "Unauthorized": "未授权",
        "Method not allowed": "不允许的请求方法",
        "Not acceptable": "无法提供所需格式",
        "Request timeout": "请求超时",
        "Gone": "内容已不存在",
        "Length required": "缺少内容长度",
        "Precondition failed": "前提条件不满足",
        "Request entity too large": "上传内容过大",
        "Request uri too long": "请求网址过长",
        "Unsupported media type": "不支持的文件类型",
        "Requested range not satisfiable": "请求的范围无效",
        "Expectation failed": "无法满足预期条件",
        "I'm a teapot": "我是茶壶",
        "Misdirected request": "请求发送到了错误的服务器",
        "Unprocessable entity": "无法处理的内容",
        "Locked": "资源已锁定",
        "Failed dependency": "依赖的请求失败",
        "Precondition required": "缺少前提条件",
        "Too many requests": "请求过于频繁",
        "Request header fields too large": "请求头过大",
        "Unavailable for legal reasons": "因法律原因不可用",
        "Internal server error": "服务器内部错误",
        "Not implemented": "功能未实现",
        "Bad gateway": "网关错误",
        "Service unavailable": "服务暂不可用",
        "Gateway timeout": "网关超时",
        "Http version not supported": "不支持的 HTTP 版本",
        # Messages of refused input and actions, as the services write them; `{}` stands for
        # a value the message carries (see `translate_message`)
        "no such case": "没有这个案件",
        "no case numbered {}": "没有编号为 {} 的案件",
        "unknown category {}": "未知的类别 {}",
        "unknown action {}": "未知的操作 {}",
        "at most {} photos at a time, not {}": "一次最多上传 {} 张照片，而不是 {} 张",
        "a description has at most {} characters": "问题描述最多 {} 个字符",
        "media_url must be an http(s) URL": "media_url 必须是 http(s) 网址",
        "an idempotency key is 8-128 letters, digits or . _ : -": (
            "幂等键为 8 到 128 个字母、数字或 . _ : -"
        ),
        "unknown attribute {} for {}": "未知的属性 {}（类别 {}）",
        "attribute[{}] is required for {}": "属性 attribute[{}] 为必填项（类别 {}）",
        "attribute[{}] is one of {}": "属性 attribute[{}] 须为以下之一：{}",
        "attribute[{}] must be a number": "属性 attribute[{}] 须为数字",
        "attribute[{}] must be an ISO 8601 date-time": "属性 attribute[{}] 须为 ISO 8601 日期时间",
        "case {} changed since you opened it (now {}): reload it": (
            "案件 {} 在您打开后已有变化（当前：{}），请刷新后重试"
        ),
        "this action needs the city's business calendar": "此操作需要城市的工作日历",
        "more time is a number of working hours or days": "延期时长须为工作小时数或工作日数",
        "more time is between 0 and 1000 working hours or days": (
            "延期时长须在 0 到 1000 个工作小时或工作日之间"
        ),
        "merge into which case? no case numbered {}": "要合并到哪个案件？没有编号为 {} 的案件",
        "case {} is not an open case to merge into": "案件 {} 不是可合并的未结案件",
        "case {} was itself merged": "案件 {} 本身已被合并",
        "unit {} does not exist or is inactive": "单位 {} 不存在或已停用",
        "case {} cannot be routed: {}": "案件 {} 无法派遣：{}",
        "the on-site check goes to an active inspector": "现场核查须指派给在岗的监督员",
        "cannot {} {}: not allowed now": "当前不允许此操作（{}，{}）",
        "a {} cannot {} a case (supervision and handling are kept separate)": (
            "{} 不能对案件执行“{}”（监督与处置相分离）"
        ),
        "this case belongs to another unit": "此案件属于其他单位",
        "this check is assigned to another inspector": "此核查已指派给其他监督员",
        "a {} request is already waiting": "已有一个 {} 申请在等待审批",
        "no {} request is waiting": "没有等待审批的 {} 申请",
        "the {} request is still waiting": "{} 申请仍在等待审批",
        "{} needs a reason": "“{}”需要填写理由",
        "{} needs a note": "“{}”需要填写说明",
        "report the work done with at least one photo": "反馈处置结果时至少附一张照片",
        "a rejection reason is one of {}": "不予受理的理由须为以下之一：{}",
        "a case can be reopened within {} days of closing": "案件结案后 {} 天内可以重新开启",
        "({}, {}) is outside the territory: no unit grid cell there": (
            "({}, {}) 在辖区之外：该处没有单元网格"
        ),
        "{} is not a stored photo path.": "{} 不是已存储照片的路径。",
        "No stored photo {}.": "没有已存储的照片 {}。",
        "Photo {} was refused: {}.": "照片 {} 未被接受：{}。",
        "the file is empty": "文件是空的",
        "it is {} bytes, more than the {} allowed": "文件有 {} 字节，超过了允许的 {} 字节",
        "it has more than the {} pixels allowed": "像素超过了允许的 {} 个",
        "it is {}x{} pixels, more than the {} allowed": "图片为 {}x{} 像素，超过了允许的 {} 像素",
        "the image cannot be read ({})": "无法读取图片（{}）",
        "the image has no pixels": "图片没有像素",
        "animated images are not accepted": "不接受动图",
        "the image is damaged or truncated ({})": "图片已损坏或不完整（{}）",
        "it is a PDF document, not an image; only {} are accepted": (
            "这是 PDF 文档，不是图片；只接受 {}"
        ),
        "it is a {} image; only {} are accepted": "这是 {} 图片；只接受 {}",
        "it looks like a {} image but is damaged or truncated": (
            "看起来是 {} 图片，但已损坏或不完整"
        ),
        "it is not an image; only {} are accepted": "这不是图片；只接受 {}",
        "the period starts after it ends": "时段的开始晚于结束",
        "a period is at most ten years": "时段最长十年",
        "{} must be between the years 1900 and 9000": "{} 须在 1900 年到 9000 年之间",
        "{} must be a number, not {}": "{} 须为数字，而不是 {}",
        "unknown {} {}": "未知的 {}：{}",
        "{} must be a date YYYY-MM-DD, not {}": "{} 须为 YYYY-MM-DD 格式的日期，而不是 {}",
        "unknown table {}; tables are {}": "未知的表 {}；可用的表：{}",
        "a form field has no name": "表单字段缺少名称",
        "{} is not a known number": "{} 不是有效的编号",
        "the request contains a NUL character": "请求中含有 NUL 字符",
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


MAX_TRANSLATED_MESSAGE = 2000  # longer messages (a value a client made huge) stay English


def translate_message(message: str) -> str:
    """A message of the services (English, its values filled in) in the current language.

    The table holds such messages with `{}` where a value goes ("unknown category {}"); a
    message matching one is translated, and so are its values when the table has them ("Photo
    {} was refused: {}." carries the reason), one level down only. Unknown messages stay
    English; so do very long ones.
    """
    lang = current_lang()
    if lang not in TRANSLATIONS or len(message) > MAX_TRANSLATED_MESSAGE:
        return message
    return _translate(message, lang, depth=0)


def _translate(message: str, lang: str, depth: int) -> str:
    table = TRANSLATIONS[lang]
    if message in table:
        return table[message]
    if depth > 1:
        return message
    for pattern, translation in _message_patterns(lang):
        if depth and pattern.pattern.startswith("("):
            continue  # a value is read as a message only by its own opening words
        found = pattern.fullmatch(message)
        if found:
            values = (_translate(value, lang, depth + 1) for value in found.groups())
            return translation.format(*values)
    return message


@cache
def _message_patterns(lang: str) -> list[tuple[re.Pattern[str], str]]:
    """The table's messages with `{}` values, as patterns capturing the values. The longest
    opening words first, so that a message is read as the template it starts with: "unknown
    category 'x must be a number, not y'" is an unknown category, not a number's complaint."""

    def specificity(english: str) -> tuple[int, int]:
        return len(english.split("{}", 1)[0]), len(english.replace("{}", ""))

    messages = sorted(
        (english for english in TRANSLATIONS[lang] if "{}" in english),
        key=specificity,
        reverse=True,
    )
    return [
        (
            re.compile(re.escape(english).replace(r"\{\}", "(.+?)"), re.S),
            TRANSLATIONS[lang][english],
        )
        for english in messages
    ]


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
