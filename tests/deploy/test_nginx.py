"""The shipped nginx site in front of the real gunicorn, over TLS: static files from disk,
reports with photos, Open311 and the supervisors' map through the proxy, the upload limit, the
redirect to HTTPS, the client's address as the proxy saw it, and no query string in its log."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from gridmgmt.app.demo import DEMO_API_KEY, DEMO_PASSWORD
from tests.conftest import ROOT
from tests.deploy.conftest import Gunicorn, Nginx
from tests.security.test_reports import jpeg

GARBAGE = "E0102"


def browser(nginx: Nginx) -> requests.Session:
    """A client that trusts the test's certificate (and checks it) and, like a browser, sends
    a Referer (over HTTPS the CSRF check wants one of the same origin)."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`
    session.verify = str(nginx.certificate)
    session.headers["Referer"] = f"{nginx.https}/"
    return session


def csrf(session: requests.Session, page: str) -> str:
    """The CSRF token of a page's form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', session.get(page).text)
    assert found is not None
    return found.group(1)


def sign_in(nginx: Nginx, username: str, password: str = DEMO_PASSWORD) -> requests.Response:
    """Sign in through the proxy (Secure cookies: only over HTTPS)."""
    session = browser(nginx)
    token = csrf(session, f"{nginx.https}/login")
    answer = session.post(
        f"{nginx.https}/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
    )
    answer.session = session  # type: ignore[attr-defined]
    return answer


@pytest.fixture(scope="module")
def inside(deploy_db: URL) -> tuple[float, float]:
    """A point in the demo city's first community."""
    engine = create_engine(deploy_db)
    with engine.connect() as conn:
        lon, lat = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p"
                " WHERE level = 'community' ORDER BY code LIMIT 1"
            )
        ).one()
    engine.dispose()
    return float(lon), float(lat)


def test_static_files_come_from_disk_through_nginx(nginx: Nginx) -> None:
    answer = browser(nginx).get(f"{nginx.https}/static/css/app.css")

    assert answer.status_code == 200
    assert answer.content == (ROOT / "gridmgmt" / "static" / "css" / "app.css").read_bytes()
    assert "Content-Security-Policy" not in answer.headers  # not the app: nginx itself
    assert "public" in answer.headers["Cache-Control"]


def test_plain_http_is_sent_to_https(nginx: Nginx) -> None:
    answer = requests.get(f"{nginx.http}/report?x=1", allow_redirects=False, timeout=10)

    assert answer.status_code == 301
    assert answer.headers["Location"].startswith("https://")
    assert answer.headers["Location"].endswith("/report?x=1")


def test_pages_through_the_proxy_are_https_pages(nginx: Nginx) -> None:
    answer = browser(nginx).get(f"{nginx.https}/report")

    assert answer.status_code == 200
    assert "max-age" in answer.headers["Strict-Transport-Security"]  # the app saw HTTPS
    assert "Content-Security-Policy" in answer.headers


def test_a_report_with_photos_goes_through(
    nginx: Nginx, gunicorn: Gunicorn, inside: tuple[float, float]
) -> None:
    session = browser(nginx)
    token = csrf(session, f"{nginx.https}/report")
    photos = [
        ("photos", (f"p{i}.jpg", jpeg((20 * i, 90, 90), (640, 480)), "image/jpeg"))
        for i in range(3)
    ]
    answer = session.post(
        f"{nginx.https}/api/reports",
        data={"category": GARBAGE, "lon": inside[0], "lat": inside[1], "description": "via nginx"},
        files=photos,
        headers={"X-CSRFToken": token},
    )

    assert answer.status_code == 201, answer.text[:300]
    stored = [p for p in Path(gunicorn.photo_dir).rglob("*") if p.is_file()]
    assert len(stored) >= 3


def test_an_upload_over_the_limit_is_refused_by_nginx(nginx: Nginx) -> None:
    body = b"x" * (41 * 1024 * 1024)
    answer = browser(nginx).post(
        f"{nginx.https}/api/reports", data=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == 413
    assert "nginx" in answer.text  # refused before the app read a byte


def test_open311_goes_through(nginx: Nginx, inside: tuple[float, float]) -> None:
    session = browser(nginx)
    created = session.post(
        f"{nginx.https}/open311/v2/requests.json",
        data={
            "api_key": DEMO_API_KEY,
            "service_code": GARBAGE,
            "long": inside[0],
            "lat": inside[1],
            "description": "open311 via nginx",
        },
    )
    assert created.status_code == 201, created.text[:300]
    number = created.json()[0]["service_request_id"]

    found = session.get(f"{nginx.https}/open311/v2/requests/{number}.json")
    assert found.status_code == 200 and found.json()[0]["service_request_id"] == number
    xml = session.get(f"{nginx.https}/open311/v2/services.xml")
    assert xml.status_code == 200 and xml.text.startswith("<?xml")


def test_the_map_goes_through(nginx: Nginx) -> None:
    signed = sign_in(nginx, "leader")
    assert signed.status_code in (302, 303)
    session: requests.Session = signed.session  # type: ignore[attr-defined]

    page = session.get(f"{nginx.https}/maps")
    frame = session.get(f"{nginx.https}/maps/frame")
    assert page.status_code == 200 and frame.status_code == 200
    assert "leaflet" in frame.text.lower()


def test_the_app_sees_the_client_not_a_forged_address(nginx: Nginx, deploy_db: URL) -> None:
    username = f"nobody-{uuid.uuid4().hex[:6]}"
    session = browser(nginx)
    token = csrf(session, f"{nginx.https}/login")
    session.post(
        f"{nginx.https}/login",
        data={"username": username, "password": "wrong-password-1", "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )

    engine = create_engine(deploy_db)
    with engine.connect() as conn:
        clients = (
            conn.execute(
                text("SELECT client FROM security_events WHERE username = :u"), {"u": username}
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert clients == ["127.0.0.1"]  # the address nginx saw, not what the client claimed


def test_the_access_log_keeps_no_query_string(nginx: Nginx) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    browser(nginx).get(f"{nginx.https}/open311/v2/requests.json", params={"api_key": secret})

    log = (nginx.folder / "gridmgmt.access.log").read_text()
    assert "/open311/v2/requests.json" in log
    assert secret not in log
