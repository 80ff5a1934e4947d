"""The installable, offline-first phone app: the service worker, the web manifest, the outbox
page, what the outbox asks before sending, and the photos it sends one a request.

The service worker is served at /sw.js (not under /static/) so that its scope is the whole
app. Its version is the SHA-256 of the files it keeps for offline use (and of ASSET_VERSION,
when a deployment sets one): a deployment that changes any of them changes the worker's bytes,
the browser installs the new worker, and the new worker drops the old version's caches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    url_for,
)
from flask import session as cookie_session
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from cases import offline
from cases.forms import parse, uploads
from cases.schemas import AttachedPhoto, PhotoUpload
from cases.views import photo_root, signed_in
from gridmgmt.kernel import clock, ratelimit
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role, User

bp = Blueprint("offline", __name__, template_folder="templates")

# The files every page needs, kept by the service worker at install (relative to /static/).
SHELL_FILES = (
    "css/app.css",
    "css/outbox.css",
    "js/outbox.js",
    "js/outbox-core.js",
    "js/map.js",
    "js/report.js",
    "vendor/leaflet/leaflet.js",
    "vendor/leaflet/leaflet.css",
    "vendor/leaflet/images/marker-icon.png",
    "vendor/leaflet/images/marker-icon-2x.png",
    "vendor/leaflet/images/marker-shadow.png",
    "vendor/leaflet/images/layers.png",
    "icons/icon-192.png",
    "icons/icon-512.png",
)
WORKER_FILE = "sw.js"
_SHELL_HASH = "gridmgmt.offline.shell_hash"
# Pages the phone keeps for offline use, by role (network first: the cached copy only
# without a signal); every one of them is dropped on sign-out.
OFFLINE_PAGES: dict[str | None, tuple[str, ...]] = {
    None: ("cases.report_form", "offline.outbox"),
    Role.INSPECTOR.value: ("cases.report_form", "cases.verification_tasks", "offline.outbox"),
}
DATA_ENDPOINTS = ("grids.communities",)  # public data kept for the map without a signal


def static_folder() -> Path:
    """The app's static files."""
    return Path(current_app.static_folder or "")


def worker_version() -> str:
    """The version of the service worker: a hash of the worker and of the files it keeps (read
    once per process: a deployment restarts it) with ASSET_VERSION, when set."""
    shell = current_app.extensions.get(_SHELL_HASH)
    if shell is None:
        digest = hashlib.sha256()
        for name in (WORKER_FILE, *SHELL_FILES):
            digest.update(name.encode() + b"\0" + (static_folder() / name).read_bytes())
        shell = current_app.extensions[_SHELL_HASH] = digest.hexdigest()
    extra = str(current_app.config.get("ASSET_VERSION", ""))
    return hashlib.sha256(f"{shell}\0{extra}".encode()).hexdigest()[:16]


@bp.get("/sw.js")
def service_worker() -> ResponseReturnValue:
    """The service worker, with its version and the files it keeps written in."""
    source = (static_folder() / WORKER_FILE).read_text(encoding="utf-8")
    shell = [url_for("static", filename=name) for name in SHELL_FILES]
    data = [
        url_for(endpoint) for endpoint in DATA_ENDPOINTS if endpoint in current_app.view_functions
    ]
    body = (
        source.replace('"__GRIDMGMT_VERSION__"', json.dumps(worker_version()))
        .replace("[] /*__SHELL__*/", json.dumps(shell))
        .replace("[] /*__DATA__*/", json.dumps(data))
        .replace('"__CORE__"', json.dumps(url_for("static", filename="js/outbox-core.js")))
    )
    answer = Response(body, mimetype="text/javascript")
    answer.headers["Service-Worker-Allowed"] = "/"
    answer.cache_control.no_cache = True  # the browser asks again each time it checks
    return answer


@bp.get("/manifest.webmanifest")
def manifest() -> ResponseReturnValue:
    """The web manifest: name, icons, the page the installed app opens on."""
    icons = [
        {
            "src": url_for("static", filename=f"icons/icon-{size}.png"),
            "sizes": f"{size}x{size}",
            "type": "image/png",
            "purpose": "any maskable",
        }
        for size in (192, 512)
    ]
    body = {
        "name": _("gridmgmt: report a problem"),
        "short_name": "gridmgmt",
        "description": _("Report problems in the street, with or without a signal."),
        "start_url": url_for("cases.report_form"),
        "scope": "/",
        "display": "standalone",
        "background_color": "#ffffff",
        "theme_color": "#1d4f91",
        "icons": icons,
    }
    answer = Response(json.dumps(body, ensure_ascii=False), mimetype="application/manifest+json")
    answer.cache_control.no_cache = True
    return answer


@bp.get("/outbox")
def outbox() -> ResponseReturnValue:
    """What this phone keeps to send: reports, their photos, task actions (read by the page's
    script from the phone's own storage; the server knows nothing of it)."""
    return render_template("cases/outbox.html")


@bp.get("/api/offline/session")
def offline_session() -> ResponseReturnValue:
    """What the outbox asks before sending: who is signed in (it sends a person's items only
    in their own session), a fresh CSRF token, the pages to keep for offline use; with
    `?keep=1` (the phone's keeping round, every 10 minutes at most) also `cells`, the URLs of
    the grid cells to keep for the map: for an inspector, around their tasks and recent
    reports (`offline.places_of_inspector`), for anyone else none.

    It never starts a session: a phone whose cookie is gone asks this on every page, so a
    session made here (its own CSRF token) could come back after the page's own and replace
    it, and the page's form would then fail its CSRF check (seen on the login page after a
    restart). Without a session it answers no token; the page, which starts one, is sent with
    its own, and the outbox waits for the next call."""
    user = signed_in()
    role = user.role if user is not None else None
    pages = OFFLINE_PAGES.get(role, OFFLINE_PAGES[None])
    has_token = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token") in cookie_session
    body: dict[str, object] = {
        "user": str(user.id) if user is not None else "",
        "role": role,
        "csrf_token": generate_csrf() if has_token else "",
        "version": worker_version(),
        "pages": [url_for(page) for page in pages if page in current_app.view_functions],
    }
    if request.args.get("keep"):
        body["cells"] = cells_to_keep(user)
    answer = jsonify(body)
    answer.cache_control.no_store = True
    return answer


def cells_to_keep(user: User | None) -> list[str]:
    """The `cells.geojson` URLs a phone keeps for this person's map without a signal, each as
    the map asks for it (its `?bbox=`, unencoded)."""
    if (
        user is None
        or user.role != Role.INSPECTOR.value
        or "grids.cells" not in (current_app.view_functions)
    ):
        return []
    places = offline.places_of_inspector(db.session(), user.id, clock.now_utc())
    source = url_for("grids.cells")
    return [f"{source}?bbox={offline.bbox_param(box)}" for box in offline.cell_boxes(places)]


@bp.post("/api/reports/<submission_uuid>/photos")
def add_photo(submission_uuid: str) -> ResponseReturnValue:
    """One photo of a report sent before: 201 stored, 200 a repeat (nothing stored)."""
    ratelimit.limit(
        "actions",
        per_client="RATE_ACTIONS_PER_CLIENT",
        per_account="RATE_ACTIONS_PER_ACCOUNT",
        account=ratelimit.account_of_user(),
    )
    files = uploads(request.files, "photo")
    if len(files) != 1:
        raise InvalidInput("send exactly one photo, in the field photo", field="photo")
    body = parse(PhotoUpload, {**request.form, "photo": files[0]})
    with db.transaction() as session:
        result = offline.attach_photo(
            session,
            submission_uuid,
            body.photo_uuid,
            body.photo,
            signed_in(),
            photo_root(),
            body.captured_at,
        )
    answer = AttachedPhoto(
        photo_uuid=body.photo_uuid.lower(),
        case_id=result.case_id,
        number=result.number,
        photos=result.photos,
        created=result.created,
    )
    return jsonify(answer.json_body()), 201 if result.created else 200


def init_app(app: Flask) -> None:
    """Register the phone app's routes; pages know whether the user is signed in for the
    outbox (`gridmgmt_user`: the id, or "")."""
    app.register_blueprint(bp)

    @app.context_processor
    def _offline_user() -> dict[str, str]:
        signed = current_user.is_authenticated if current_user else False
        return {"gridmgmt_user": str(current_user.id) if signed else ""}
