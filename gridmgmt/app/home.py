"""The front page: what this city is made of, and where to go next."""

from __future__ import annotations

from flask import Blueprint, Flask, render_template_string
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from cases.models import Category
from gridmgmt.kernel.db import db
from gridmgmt.kernel.settings import city_settings
from grids.models import Area, GridCell

bp = Blueprint("home", __name__)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gridmgmt · {{ city }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
dt{font-weight:600}</style></head><body>
<h1>gridmgmt · {{ city }}</h1>
<p>Grid-based urban management case dispatch · 数字化城市管理</p>
<dl>
<dt>Communities 社区</dt><dd>{{ communities }}</dd>
<dt>Unit grid cells 单元网格</dt><dd>{{ cells }}</dd>
<dt>Categories 部件/事件小类</dt><dd>{{ categories }}</dd>
</dl>
<p><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p>
{% if current_user.is_authenticated and current_user.role == "admin" %}
<p><a href="{{ url_for('admin.setup') }}">Setup check 配置检查</a> ·
<a href="{{ url_for('admin.people') }}">People 人员</a> ·
<a href="{{ url_for('admin.keys') }}">API keys API 密钥</a> ·
<a href="{{ url_for('admin.audit') }}">Audit log 管理审计日志</a> ·
<a href="{{ url_for('security.events') }}">Security events 安全事件</a></p>
{% endif %}
</body></html>"""


@bp.get("/")
def index() -> ResponseReturnValue:
    """A small summary page of the territory and the catalogue."""
    session = db.session()
    return render_template_string(
        PAGE,
        city=city_settings().name,
        communities=session.scalar(
            select(func.count()).select_from(Area).where(Area.level == "community")
        ),
        cells=session.scalar(select(func.count()).select_from(GridCell)),
        categories=session.scalar(select(func.count()).select_from(Category)),
    )


def init_app(app: Flask) -> None:
    """Register the front page."""
    app.register_blueprint(bp)
