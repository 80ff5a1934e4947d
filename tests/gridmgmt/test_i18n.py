"""Language negotiation, the language switch, Flask-Babel's catalogue and formats, and the
offline base layout."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask, flash, render_template_string
from flask.testing import FlaskClient
from flask_babel import get_locale, get_timezone

from gridmgmt.kernel import i18n
from gridmgmt.kernel.errors import InvalidInput, Message

PACKAGE = Path(i18n.__file__).resolve().parent.parent
TEMPLATES = PACKAGE / "templates"
STATIC = PACKAGE / "static"

PAGE = """{% extends "base.html" %}
{% block title %}{{ _("Track a case") }}{% endblock %}
{% block content %}<p id="t">{{ _("Report a problem") }}</p>
<p id="s">{{ status_label("in_progress") }}</p>
<p id="when">{{ when|localtime }}</p>{% endblock %}"""


@pytest.fixture
def web_app() -> Flask:
    """A bare Flask app with only the i18n wiring and the shared templates and static files."""
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(STATIC))
    app.config.update(
        SECRET_KEY="test", TESTING=True, CITY_NAME="Testville", DISPLAY_TZ="Asia/Shanghai"
    )
    i18n.init_app(app)

    @app.get("/page")
    def page() -> str:
        return render_template_string(
            PAGE,
            when=datetime(2024, 3, 1, 1, 30, tzinfo=UTC),
            nav_links=[("My cases", "/cases"), ("Inbox", "/page")],
        )

    @app.get("/flashed")
    def flashed() -> str:
        flash("saved", "ok")
        flash("broken", "error")
        return render_template_string('{% extends "base.html" %}')

    return app


@pytest.fixture
def client(web_app: Flask) -> FlaskClient:
    """A test client of the bare app."""
    return web_app.test_client()


def text_of(client: FlaskClient, path: str = "/page", **headers: str) -> str:
    """GET a page and return its HTML, checking that it answered 200."""
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_accept_language_zh_gives_chinese(client: FlaskClient) -> None:
    html = text_of(client, **{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert '<html lang="zh">' in html
    assert '<p id="t">上报问题</p>' in html
    assert '<p id="s">处置中</p>' in html
    assert "案件查询 · gridmgmt" in html
    assert ">我的案件</a>" in html
    assert ">English</a>" in html


def test_accept_language_en_gives_english(client: FlaskClient) -> None:
    html = text_of(client, **{"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in html
    assert '<p id="t">Report a problem</p>' in html
    assert '<p id="s">In progress</p>' in html
    assert ">中文</a>" in html


@pytest.mark.parametrize("header", [None, "", "fr-FR,de;q=0.8", "*"])
def test_no_usable_language_gives_english(client: FlaskClient, header: str | None) -> None:
    headers = {} if header is None else {"Accept-Language": header}
    assert '<p id="t">Report a problem</p>' in text_of(client, **headers)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("en;q=0.5,zh-TW;q=0.9", "上报问题"),
        ("zh-CN,en;q=0.9", "上报问题"),
        ("zh-Hans-CN", "上报问题"),
        ("fr,en-GB;q=0.8,zh;q=0.7", "Report a problem"),
        ("zh;q=0,en;q=0.1", "Report a problem"),
    ],
)
def test_preference_order_is_respected(client: FlaskClient, header: str, expected: str) -> None:
    assert f'<p id="t">{expected}</p>' in text_of(client, **{"Accept-Language": header})


def test_cookie_overrides_header(client: FlaskClient) -> None:
    client.set_cookie("lang", "en")
    assert '<p id="t">Report a problem</p>' in text_of(client, **{"Accept-Language": "zh-CN"})
    client.set_cookie("lang", "zh")
    assert '<p id="t">上报问题</p>' in text_of(client, **{"Accept-Language": "en-US"})


def test_invalid_cookie_is_ignored(client: FlaskClient) -> None:
    client.set_cookie("lang", "xx")
    assert '<p id="t">上报问题</p>' in text_of(client, **{"Accept-Language": "zh-CN"})


def test_switch_sets_cookie_and_redirects_to_next(client: FlaskClient) -> None:
    response = client.get("/lang/zh?next=/x")
    assert response.status_code == 302
    assert response.headers["Location"] == "/x"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("lang=zh;")
    assert "Max-Age=31536000" in cookie
    assert "SameSite=Lax" in cookie
    assert client.get_cookie("lang").value == "zh"
    # The cookie now wins over an English browser.
    assert '<p id="t">上报问题</p>' in text_of(client, **{"Accept-Language": "en"})


def test_switch_keeps_query_string_of_next(client: FlaskClient) -> None:
    response = client.get("/lang/en", query_string={"next": "/cases?status=filed&page=2"})
    assert response.headers["Location"] == "/cases?status=filed&page=2"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "http://evil.com",
        "https://evil.com/x",
        "/\\evil.com",
        "/\t/evil.com",
        "javascript:alert(1)",
        "evil.com",
        "",
    ],
)
def test_switch_refuses_foreign_next(client: FlaskClient, target: str) -> None:
    response = client.get("/lang/en", query_string={"next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert client.get_cookie("lang").value == "en"


def test_switch_to_unsupported_language_is_404(client: FlaskClient) -> None:
    response = client.get("/lang/fr?next=/x")
    assert response.status_code == 404
    assert client.get_cookie("lang") is None


def test_language_link_points_back_to_the_page(client: FlaskClient) -> None:
    html = text_of(client, "/page?a=1", **{"Accept-Language": "en"})
    assert 'href="/lang/zh?next=/page?a%3D1"' in html
    html = text_of(client, "/page", **{"Accept-Language": "zh"})
    assert 'href="/lang/en?next=/page"' in html


def test_nav_links_rendered_only_when_given(client: FlaskClient) -> None:
    html = text_of(client, **{"Accept-Language": "en"})
    assert '<a href="/cases">My cases</a>' in html
    assert '<a href="/page" aria-current="page">Inbox</a>' in html
    assert "<nav" not in text_of(client, "/flashed")


def test_flashed_messages_carry_their_category(client: FlaskClient) -> None:
    html = text_of(client, "/flashed")
    assert '<p class="flash flash-ok" role="status">saved</p>' in html
    assert '<p class="flash flash-error" role="alert">broken</p>' in html


def test_base_without_login_csrf_or_auth(client: FlaskClient) -> None:
    html = text_of(client)
    assert 'name="csrf-token"' not in html
    assert "logout" not in html
    assert "Testville" in html


def test_localtime_uses_display_tz(client: FlaskClient) -> None:
    assert '<p id="when">2024-03-01 09:30</p>' in text_of(client)


def test_localtime_defaults_to_los_angeles(web_app: Flask) -> None:
    del web_app.config["DISPLAY_TZ"]
    with web_app.test_request_context("/"):
        assert i18n.localtime(datetime(2024, 7, 1, 19, 5, tzinfo=UTC)) == "2024-07-01 12:05"
        assert i18n.localtime(None) == ""


def test_gettext_with_values(web_app: Flask) -> None:
    with web_app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        web_app.preprocess_request()
        assert i18n.gettext("Signed in as %(name)s", name="王五") == "当前用户：王五"
        assert i18n.gettext("Status") == "状态"
        assert i18n.gettext("No such entry %(n)s", n=3) == "No such entry 3"
    with web_app.test_request_context("/", headers={"Accept-Language": "en"}):
        web_app.preprocess_request()
        assert i18n.gettext("Signed in as %(name)s", name="Ann") == "Signed in as Ann"


def test_gettext_outside_a_request_is_english() -> None:
    assert i18n.current_lang() == "en"
    assert i18n.gettext("Sign in") == "Sign in"


def test_flask_babel_follows_the_negotiated_language_and_display_tz(web_app: Flask) -> None:
    with web_app.test_request_context("/", headers={"Accept-Language": "zh-CN,en;q=0.9"}):
        web_app.preprocess_request()
        assert str(get_locale()) == "zh"
        assert str(get_timezone()) == "Asia/Shanghai"
    with web_app.test_request_context("/", headers={"Cookie": "lang=en"}):
        web_app.preprocess_request()
        assert str(get_locale()) == "en"


def test_one_app_context_serves_each_request_in_its_own_language(web_app: Flask) -> None:
    # Flask-Babel caches the locale in `g`; tests (and CLI code) reuse one app context.
    with web_app.app_context():
        client = web_app.test_client()
        assert '<p id="t">上报问题</p>' in text_of(client, **{"Accept-Language": "zh"})
        assert '<p id="t">Report a problem</p>' in text_of(client, **{"Accept-Language": "en"})


def test_messages_render_from_the_catalogue_with_their_values(web_app: Flask) -> None:
    why = Message("it is %(size)s bytes, more than the %(most)s allowed", {"size": 9, "most": 5})
    refused = Message("Photo %(name)r was refused: %(why)s.", {"name": "a.jpg", "why": why})
    english = "Photo 'a.jpg' was refused: it is 9 bytes, more than the 5 allowed."
    assert refused.render() == str(refused) == english
    assert Message("").render(i18n.gettext) == ""  # not the catalogue's header
    with web_app.test_request_context("/", headers={"Accept-Language": "zh"}):
        web_app.preprocess_request()
        assert refused.render(i18n.gettext) == (
            "照片 'a.jpg' 未被接受：文件有 9 字节，超过了允许的 5 字节。"
        )
        assert Message("").render(i18n.gettext) == ""
        err = InvalidInput("unknown category %(code)r", field="category", code="X9")
        assert err.message == "unknown category 'X9'"
        assert err.render(i18n.gettext) == "未知的类别 'X9'"
        assert err.details == {"field": "category"}


def test_dates_and_numbers_are_formatted_by_babel(web_app: Flask) -> None:
    when = datetime(2024, 3, 1, 1, 30, tzinfo=UTC)
    for lang in ("en", "zh"):
        with web_app.test_request_context("/", headers={"Accept-Language": lang}):
            web_app.preprocess_request()
            assert i18n.localtime(when) == "2024-03-01 09:30"  # same look, Shanghai time
            assert i18n.localtime(datetime(2024, 3, 1, 1, 30)) == "2024-03-01 09:30"  # naive=UTC
            assert i18n.number(12345) == "12,345"
            assert i18n.decimal(2.25) == "2.2"  # half to even, as Babel rounds
            assert i18n.percent(0.1234) == "12.3%"
            assert i18n.percent(None) == i18n.decimal(None) == i18n.number(None) == ""
    with web_app.test_request_context("/", headers={"Accept-Language": "zh"}):
        web_app.preprocess_request()
        assert i18n.localtime(when, "medium") == "2024年3月1日 09:30:00"
        assert i18n.format_date(when.date()) == "2024年3月1日"
    with web_app.test_request_context("/", headers={"Accept-Language": "en"}):
        web_app.preprocess_request()
        assert i18n.format_date(when.date()) == "Mar 1, 2024"


@pytest.mark.parametrize(
    ("header", "obj", "expected"),
    [
        ("zh", SimpleNamespace(name_zh="井盖", name_en="Manhole cover"), "井盖"),
        ("en", SimpleNamespace(name_zh="井盖", name_en="Manhole cover"), "Manhole cover"),
        ("zh", SimpleNamespace(name_zh="", name_en="Manhole cover"), "Manhole cover"),
        ("en", SimpleNamespace(name_zh="井盖", name_en=None), "井盖"),
        ("en", SimpleNamespace(name_zh="井盖"), "井盖"),
        ("zh", SimpleNamespace(), ""),
    ],
)
def test_localized(web_app: Flask, header: str, obj: object, expected: str) -> None:
    with web_app.test_request_context("/", headers={"Accept-Language": header}):
        web_app.preprocess_request()
        assert i18n.localized(obj, "name") == expected


def test_required_translations_present(web_app: Flask) -> None:
    statuses = {
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
    }
    with web_app.test_request_context("/", headers={"Accept-Language": "zh"}):
        web_app.preprocess_request()
        for english, chinese in statuses.items():
            assert i18n.gettext(english) == chinese
        assert i18n.gettext("Dispatch board") == "派遣台"
        assert i18n.gettext("Sending…") == "正在发送…"


def test_has_endpoint_guards_logout(web_app: Flask) -> None:
    with web_app.test_request_context("/"):
        assert i18n.has_endpoint("i18n.switch_language")
        assert not i18n.has_endpoint("auth.logout")


def static_references() -> list[str]:
    """Every static file named by base.html (url_for) and map.js's documented vendor files."""
    base = (TEMPLATES / "base.html").read_text(encoding="utf-8")
    names = re.findall(r"url_for\('static', filename='([^']+)'\)", base)
    map_js = (STATIC / "js" / "map.js").read_text(encoding="utf-8")
    names += ["vendor/" + n for n in re.findall(r"static/vendor/([\w./-]+\.\w+)", map_js)]
    vendor = STATIC / "vendor"
    names += [str(p.relative_to(STATIC)) for p in vendor.rglob("*") if p.is_file()]
    names.append("js/map.js")
    return sorted(set(names))


def test_static_references_cover_the_layout() -> None:
    names = static_references()
    assert "css/app.css" in names
    for required in (
        "vendor/leaflet/leaflet.js",
        "vendor/leaflet/leaflet.css",
        "vendor/leaflet/images/marker-icon.png",
        "vendor/leaflet/images/marker-icon-2x.png",
        "vendor/leaflet/images/marker-shadow.png",
        "vendor/leaflet/LICENSE",
        "vendor/leaflet.markercluster/leaflet.markercluster.js",
        "vendor/leaflet.markercluster/MarkerCluster.css",
        "vendor/leaflet.markercluster/MarkerCluster.Default.css",
        "vendor/leaflet.markercluster/LICENSE",
        "vendor/leaflet.heat/leaflet-heat.js",
        "vendor/leaflet.heat/LICENSE",
        "vendor/README.md",
    ):
        assert required in names


@pytest.mark.parametrize("name", static_references())
def test_static_file_exists_and_is_served(client: FlaskClient, name: str) -> None:
    path = STATIC / name
    assert path.is_file()
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.data == path.read_bytes()
    response.close()


def test_vendored_versions() -> None:
    assert "Leaflet 1.9.4" in (STATIC / "vendor/leaflet/leaflet.js").read_text()[:200]
    readme = (STATIC / "vendor/README.md").read_text()
    for version in ("| 1.9.4 |", "| 1.5.3 |", "| 0.2.0 |"):
        assert version in readme


def test_leaflet_css_images_are_vendored() -> None:
    css = (STATIC / "vendor/leaflet/leaflet.css").read_text()
    images = {
        image.strip("'\"")
        for image in re.findall(r"url\(([^)]+)\)", css)
        if not image.strip("'\"").startswith(("data:", "#"))
    }
    assert images == {"images/layers.png", "images/layers-2x.png", "images/marker-icon.png"}
    for image in images:
        assert (STATIC / "vendor/leaflet" / image).is_file(), image


def test_base_and_assets_are_offline() -> None:
    base = (TEMPLATES / "base.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", base)
    assert not re.search(r"https?://", (STATIC / "css/app.css").read_text())
    assert "@import" not in (STATIC / "css/app.css").read_text()
    # map.js fetches only what the page gives it (tiles, outlines): no built-in remote URL.
    assert not re.search(r"https?://", (STATIC / "js/map.js").read_text())


def test_rendered_page_has_no_remote_url(client: FlaskClient) -> None:
    html = text_of(client, **{"Accept-Language": "en"})
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert 'name="viewport"' in html


def test_html_responses_vary_on_language(client: FlaskClient) -> None:
    response = client.get("/page")
    assert {"Cookie", "Accept-Language"} <= set(response.vary)


@pytest.mark.parametrize("lang", ["en", "zh", "de", "fr", "ar", "hi"])
def test_fast_figures_write_what_babel_writes(lang: str) -> None:
    """The evaluation's figures written without Babel's pattern machinery are Babel's own,
    roundings half to even included; a locale that writes them otherwise keeps Babel."""
    import random

    from babel import Locale
    from babel import numbers as babel_numbers

    locale = Locale.parse(lang)
    figures = i18n._figures_of(locale)
    rng = random.Random(7)
    values = [k / 2000 for k in range(2001)] + [rng.uniform(0, 2) for _ in range(3000)]
    values += [0.0005, 0.0015, 0.12345, 0.99949, 0.9995, 12.25, 1234.56, 98765.45, 1e7 + 0.05]
    for value in values:
        assert figures.percent(value) == babel_numbers.format_percent(
            value, i18n.PERCENT_PATTERN, locale=locale
        ), value
        assert figures.decimal(value) == babel_numbers.format_decimal(
            value, i18n.DECIMAL_PATTERN, locale=locale
        ), value
    assert (figures.point is not None) == (lang != "hi")  # Hindi groups 12,34,567
