"""The front page: each signed-in role's work; for the public, what they can do here."""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, render_template
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, select

from cases.models import Category
from gridmgmt.kernel.db import db
from gridmgmt.kernel.web import home_for
from grids.models import Area, GridCell

bp = Blueprint("home", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """The home page: a signed-in person's is their work (the first page of their menu); the
    public's says what they can do here, with the city in figures."""
    if current_user.is_authenticated:
        return redirect(home_for(current_user))
    session = db.session()
    return render_template(
        "home.html",
        communities=session.scalar(
            select(func.count()).select_from(Area).where(Area.level == "community")
        ),
        cells=session.scalar(select(func.count()).select_from(GridCell)),
        categories=session.scalar(select(func.count()).select_from(Category)),
    )


def init_app(app: Flask) -> None:
    """Register the front page."""
    app.register_blueprint(bp)
